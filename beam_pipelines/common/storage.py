"""URL-aware file operations: local paths through ``os``, object stores (``s3://``, ``gs://``, any
protocol fsspec knows) through `fsspec <https://filesystem-spec.readthedocs.io>`_ (s3fs for ``s3://``,
gcsfs for ``gs://``).

Every job, the trainer's staging and the data contract go through this one module for anything that may
live in an object store, so no code assumes a shared POSIX disk (docs/object-storage.md). Local paths
keep taking the plain ``os`` path (same files, same atomic renames); Apache Beam is never imported here,
so the data contract (``beam_pipelines.dataset``), the trainer and the evaluation read object stores
without Beam installed.

Why fsspec and not Beam's ``FileSystems`` in the jobs too: Beam's public API builds a new S3 client (a
boto3 client, about 0.1 s) for every call, and a job makes hundreds of small calls (markers, sizes,
listings); keeping one client meant reaching into Beam's private attributes. fsspec keeps one filesystem
object, and so one connection pool, per process and set of options, through its public API
(``benchmarks/storage_calls_bench.py`` measures both; docs/performance.md).

Object stores have no rename and no partial objects: a file is written in one piece, and a file that
must be verified (ArrayRecord, anything listed in a manifest) is written to a local temporary file first,
uploaded, then read back from the store and checked (size and sha256) with :func:`upload`. ArrayRecord's
writer only writes local files, which is why this is not a stream.

Configuration: :func:`configure` takes the jobs' Beam filesystem options (``--s3_endpoint_url``,
``--s3_access_key_id``, ..., ``--project``) and hands them to s3fs/gcsfs; without them s3fs (botocore)
reads the standard AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, the
shared credentials file), and gcsfs uses application-default credentials (or the emulator named by
``STORAGE_EMULATOR_HOST``). :func:`check_location` turns the three common mistakes (a bucket that does
not exist, no credentials, access denied) into one :class:`~beam_pipelines.common.errors.InputError`
naming the URL, before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

from beam_pipelines.common.errors import InputError
from beam_pipelines.common.files import atomic_path

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
CHUNK = 1 << 22  # bytes per read when hashing or copying: 4 MiB

_options: dict = {}  # the filesystem options given to configure(), shipped to workers in job contexts


def scheme(path: str) -> str:
    """``s3``, ``gs``, ... for a URL; ``""`` for a local path (``file://`` counts as local)."""
    m = _URL.match(path)
    return m.group(1).lower() if m and m.group(1).lower() != "file" else ""


def is_remote(path: str) -> bool:
    """Whether ``path`` is an object-store URL (anything but a local path)."""
    return scheme(path) != ""


def join(base: str, *parts: str) -> str:
    """``base/part/...``; URLs are joined with ``/`` (posixpath.join does exactly that for them)."""
    return os.path.join(base, *parts)


# --- configuration -------------------------------------------------------------------------------

_FS_OPTION_PREFIXES = ("s3_", "gcs_", "project", "hdfs_", "azure_", "blob_")


def filesystem_options(pipeline_options) -> dict:
    """The filesystem options (S3, GCS, HDFS, Azure) out of a Beam ``PipelineOptions``, as a small dict
    that a job context can carry to workers that did not get the pipeline's options (Dask)."""
    everything = pipeline_options.get_all_options(drop_default=True)
    return {k: v for k, v in everything.items() if k.startswith(_FS_OPTION_PREFIXES) and v is not None}


def configure(options: dict | None) -> None:
    """Use ``options`` (see :func:`filesystem_options`) for every object-store call in this process from
    now on. Idempotent and cheap; a worker calls it with its job context's options before touching a URL."""
    global _options
    _options = dict(options or {})


def current_options() -> dict:
    """The options :func:`configure` was last given."""
    return dict(_options)


# Beam's S3 options, as s3fs takes them (top-level keyword, or a keyword of the botocore client).
_S3_KWARGS = {"s3_access_key_id": "key", "s3_secret_access_key": "secret", "s3_session_token": "token",
              "s3_endpoint_url": "endpoint_url"}
_S3_CLIENT_KWARGS = {"s3_region_name": "region_name", "s3_api_version": "api_version", "s3_verify": "verify"}
_EXTRA = {"s3": "s3fs (pip install 'ping-llm[aws]')", "gs": "gcsfs (pip install 'ping-llm[gcp]')"}


def fsspec_kwargs(protocol: str, options: dict | None = None) -> dict:
    """The keyword arguments of the fsspec filesystem for ``protocol`` under the jobs' filesystem
    ``options`` (default: those of :func:`configure`).

    Listings are never cached: another process (a worker) may have written since the last one.
    """
    options = _options if options is None else options
    kwargs: dict = {"use_listings_cache": False}
    if protocol in ("s3", "s3a"):
        kwargs.update({kw: options[k] for k, kw in _S3_KWARGS.items() if options.get(k)})
        client = {kw: options[k] for k, kw in _S3_CLIENT_KWARGS.items() if options.get(k) is not None}
        if client:
            kwargs["client_kwargs"] = client
        if options.get("s3_disable_ssl"):
            kwargs["use_ssl"] = False
    elif protocol in ("gs", "gcs"):
        if options.get("project"):
            kwargs["project"] = options["project"]
        # gcsfs falls back to anonymous access when it finds no credentials; a missing login should be
        # one clear error instead (application-default credentials), except against a local emulator.
        kwargs["token"] = "anon" if os.environ.get("STORAGE_EMULATOR_HOST") else "google_default"
    return kwargs


_filesystems: dict = {}  # (pid, protocol, options) -> filesystem: one client per process and options


def filesystem(url: str):
    """The fsspec filesystem for ``url``'s protocol under the configured options (one per process).

    Raises :class:`InputError` naming ``url`` when no filesystem is installed for its protocol.
    """
    import fsspec

    protocol = scheme(url)
    kwargs = fsspec_kwargs(protocol)
    key = (os.getpid(), protocol, json.dumps(kwargs, sort_keys=True, default=str))
    fs = _filesystems.get(key)
    if fs is None:
        try:
            if protocol in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
                # gcsfs's default class first asks a gRPC control plane for each bucket's layout (zonal
                # buckets), which an emulator does not serve; its core class speaks the JSON API only.
                from gcsfs.core import GCSFileSystem

                fs = GCSFileSystem(**kwargs)
            else:
                fs = fsspec.filesystem(protocol, **kwargs)
        except ImportError as exc:
            needs = _EXTRA.get(protocol, exc.name or "a filesystem package")
            raise InputError(f"{url}: {protocol}:// needs {needs}") from exc
        except ValueError as exc:  # fsspec: "Protocol not known"
            raise InputError(f"{url}: no filesystem for {protocol}:// ({_first_line(str(exc))})") from exc
        except Exception as exc:
            raise _wrap(url, exc) from exc
        if len(_filesystems) > 16:  # options of forked parents, or of long-finished jobs in a test session
            _filesystems.clear()
        _filesystems[key] = fs
    return fs


def _url(protocol: str, path: str) -> str:
    """fsspec returns paths without the protocol (``bucket/key``): put it back."""
    return f"{protocol}://{path}"


# --- errors --------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    for attr in ("code", "status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status is None:  # botocore's head_bucket error: the code is the status ("404")
            code = str(response.get("Error", {}).get("Code", ""))
            status = int(code) if code.isdigit() else None
        return status
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)


def _chain_status(exc: BaseException) -> int | None:
    """The HTTP status of the store's answer behind ``exc`` (s3fs keeps botocore's error as the cause)."""
    for e in _causes(exc):
        code = _status(e)
        if code is not None:
            return code
    return None


def explain(url: str, exc: BaseException) -> str | None:
    """One line for the common object-store failures (no bucket, no credentials, access denied), else None."""
    for e in _causes(exc):
        text = f"{type(e).__name__}: {e}"
        code = _status(e)
        if "NoCredentials" in text or "Unable to locate credentials" in text or "DefaultCredentialsError" in text:
            if scheme(url) in ("gs", "gcs"):
                return (
                    f"{url}: no credentials for gs:// (application-default credentials: run `gcloud auth "
                    f"application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a key file)"
                )
            return (
                f"{url}: no credentials for {scheme(url)}:// (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"a profile, or --s3_access_key_id/--s3_secret_access_key)"
            )
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            return f"{url}: bucket {bucket_of(url)!r} does not exist"
        if (
            code == 403
            or isinstance(e, PermissionError)  # s3fs's translation of AccessDenied
            or text.startswith("OSError: Forbidden")  # gcsfs's 403
            or "AccessDenied" in text
            or "InvalidAccessKeyId" in text
            or "SignatureDoesNotMatch" in text
        ):
            return f"{url}: access denied ({_first_line(text)})"
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else text


def bucket_of(url: str) -> str:
    """The bucket of an object-store URL (``s3://BUCKET/key``)."""
    rest = _URL.sub("", url, count=1)
    return rest.split("/", 1)[0]


def key_of(url: str) -> str:
    """The object key (path inside the bucket) of an object-store URL; ``""`` for the bucket itself."""
    rest = _URL.sub("", url, count=1)
    return rest.split("/", 1)[1] if "/" in rest else ""


def _wrap(url: str, exc: BaseException) -> Exception:
    line = explain(url, exc)
    if line is not None:
        return InputError(line)
    if isinstance(exc, OSError):
        return exc
    return OSError(f"{url}: {type(exc).__name__}: {_first_line(str(exc))}")


@contextlib.contextmanager
def _errors(url: str) -> Iterator[None]:
    """Re-raise an object-store failure as InputError (the three common mistakes) or OSError (the rest)."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise _wrap(url, exc) from exc


def check_location(url: str) -> None:
    """Fail fast, with one :class:`InputError` line naming ``url``, when its bucket does not exist, there
    are no credentials, or access is denied. A local path passes; another store is checked for an
    installed filesystem (and, on ``gs://``, credentials) only.

    For ``s3://`` this asks the bucket itself (HEAD bucket) with the same s3fs client, options and
    environment as every later read and write.
    """
    if not is_remote(url):
        return
    fs = filesystem(url)
    if scheme(url) != "s3":
        return
    try:
        fs.call_s3("head_bucket", Bucket=bucket_of(url))
    except Exception as exc:
        code = _chain_status(exc)
        if code == 404:
            raise InputError(f"{url}: bucket {bucket_of(url)!r} does not exist") from exc
        line = explain(url, exc)
        if line is not None or code == 403:
            raise InputError(line or f"{url}: access denied") from exc
        raise InputError(f"{url}: cannot reach the bucket ({_first_line(str(exc))})") from exc


# --- reading -------------------------------------------------------------------------------------


def exists(path: str) -> bool:
    """Whether the file ``path`` exists (a key prefix with objects under it is not a file)."""
    if not is_remote(path):
        return os.path.isfile(path)
    with _errors(path):
        return filesystem(path).isfile(path)


def isdir(path: str) -> bool:
    """A local directory, or a URL prefix under which at least one object exists."""
    if not is_remote(path):
        return os.path.isdir(path)
    return bool(list_files(path))


def size(path: str) -> int:
    """Size of the file ``path`` in bytes."""
    if not is_remote(path):
        return os.path.getsize(path)
    with _errors(path):
        return int(filesystem(path).size(path))


def list_files(prefix: str) -> list[str]:
    """Every file under the directory ``prefix``, at any depth, sorted (a missing directory: empty)."""
    if not is_remote(prefix):
        out = []
        for root, _, names in os.walk(prefix):
            out.extend(os.path.join(root, n) for n in names)
        return sorted(out)
    base = prefix.rstrip("/") + "/"
    with _errors(prefix):
        found = filesystem(prefix).find(base)
    protocol = scheme(prefix)
    # A key ending in "/" is a folder marker some tools leave, not a file.
    return sorted(u for u in (_url(protocol, p) for p in found) if u.startswith(base) and not u.endswith("/"))


def listdir(path: str) -> list[str]:
    """Names of the entries directly in the directory ``path`` (folders of a URL are key prefixes)."""
    if not is_remote(path):
        return sorted(os.listdir(path))
    base = path.rstrip("/") + "/"
    return sorted({p[len(base) :].split("/", 1)[0] for p in list_files(path)})


def glob(pattern: str) -> list[str]:
    """Sorted files matching ``pattern`` (``*`` within a name, ``**`` across folders)."""
    if not is_remote(pattern):
        import glob as _glob

        return sorted(p for p in _glob.glob(pattern, recursive=True) if os.path.isfile(p))
    with _errors(pattern):
        found = filesystem(pattern).glob(pattern, detail=True)
    protocol = scheme(pattern)
    return sorted(_url(protocol, p) for p, info in found.items() if info.get("type") == "file" and not p.endswith("/"))


def open_read(path: str):
    """A seekable binary file object for reading ``path``."""
    if not is_remote(path):
        return open(path, "rb")
    with _errors(path):
        return filesystem(path).open(path, "rb")


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    with _errors(path):
        return filesystem(path).cat_file(path)


def read_json(path: str):
    return json.loads(read_bytes(path))


def sha256(path: str) -> str:
    """sha256 hex digest of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open_read(path) as f, _errors(path):
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(path: str, local: str) -> None:
    """Copy ``path`` (a URL or a local file) to the local file ``local`` (via a temporary name)."""
    with atomic_path(local) as tmp, open_read(path) as src, open(tmp, "wb") as dst, _errors(path):
        shutil.copyfileobj(src, dst, CHUNK)


# --- writing -------------------------------------------------------------------------------------


def makedirs(path: str) -> None:
    """Create a local directory (and its parents); object stores have no directories to create."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole: locally through a temporary name and a rename, to a store in one
    upload whose size is checked afterwards."""
    if not is_remote(path):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    with _errors(path):
        filesystem(path).pipe_file(path, bytes(data))
    found = size(path)
    if found != len(data):
        raise OSError(f"{path}: wrote {len(data)} bytes but the store holds {found}")


def create_exclusive(path: str, data: bytes) -> bool:
    """Create the file ``path`` holding ``data`` only if no file of that name exists; True if this call did.

    Locally ``O_CREAT | O_EXCL``. In a store a conditional write through fsspec's ``mode="create"``: on
    S3 ``If-None-Match: *`` (s3fs), on GCS the precondition ``ifGenerationMatch=0`` (gcsfs), so the store
    itself lets exactly one writer win. Another fsspec filesystem does what its ``mode="create"`` does
    (fsspec's default: check, then write, which two writers starting together may both pass).
    """
    if not is_remote(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    try:
        filesystem(path).pipe_file(path, bytes(data), mode="create")
    except FileExistsError:  # S3's 412 and GCS's 412: the object exists
        return False
    except Exception as exc:
        if _chain_status(exc) in (409, 412):  # 409: S3's answer to a concurrent conditional write
            return False
        raise _wrap(path, exc) from exc
    return True


def write_json(path: str, obj) -> None:
    """JSON (sorted keys, indented) written whole (:func:`write_bytes`)."""
    write_bytes(path, (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode())


def upload(local: str, path: str, *, verify_sha256: bool = True) -> tuple[int, str | None]:
    """Copy the local file ``local`` to ``path`` and check what the store now holds.

    The size is always checked; with ``verify_sha256`` the object is read back and its sha256 compared
    with the local file's. Returns ``(bytes, sha256 or None)``. A local ``path`` is a plain copy through a
    temporary name (checked the same way). Raises :class:`OSError` naming ``path`` on a mismatch.
    """
    want_size = os.path.getsize(local)
    want_sha = _local_sha256(local) if verify_sha256 else None
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with atomic_path(path) as tmp:
            shutil.copyfile(local, tmp)
    else:
        with _errors(path):
            filesystem(path).put_file(local, path)
    found = size(path)
    if found != want_size:
        raise OSError(f"{path}: uploaded {want_size} bytes but the store holds {found}")
    if verify_sha256:
        got = sha256(path)
        if got != want_sha:
            raise OSError(f"{path}: sha256 of the uploaded object is {got[:12]}, the local file's {want_sha[:12]}")
    return want_size, want_sha


def _local_sha256(path: str) -> str:
    from beam_pipelines.common.files import sha256_file

    return sha256_file(path)


@contextlib.contextmanager
def local_copy_for_write(path: str, *, verify_sha256: bool = True) -> Iterator[str]:
    """Yield a local file name to write ``path``'s content to; on success it is published at ``path``.

    Locally that is ``path``'s temporary name, renamed into place (:func:`~beam_pipelines.common.files.atomic_path`).
    For a URL it is a file in a private local temporary folder, uploaded and verified (:func:`upload`),
    then removed. If the block raises, nothing is published.
    """
    if not is_remote(path):
        with atomic_path(path) as tmp:
            yield tmp
        return
    with local_tmpdir() as folder:
        local = os.path.join(folder, os.path.basename(path.rstrip("/")) or "file")
        yield local
        upload(local, path, verify_sha256=verify_sha256)


@contextlib.contextmanager
def local_tmpdir() -> Iterator[str]:
    """A private folder on this machine's temporary disk (``TMPDIR``), removed at the end."""
    folder = tempfile.mkdtemp(prefix="ping-llm-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def move(src: str, dst: str) -> None:
    """Give the file ``src`` the name ``dst`` (locally a rename; in a store a server-side copy, then
    delete, then the new object's size checked against the old one's)."""
    if not is_remote(src) and not is_remote(dst):
        os.replace(src, dst)
        return
    want = size(src)
    if scheme(src) == scheme(dst):
        with _errors(dst):
            fs = filesystem(dst)
            fs.copy(src, dst)  # server-side
            fs.rm_file(src)
    elif is_remote(dst):  # a local file into a store
        upload(src, dst, verify_sha256=False)
        remove(src)
    else:
        download(src, dst)
        remove(src)
    found = size(dst)
    if found != want:
        raise OSError(f"{dst}: moved {want} bytes but the store holds {found}")


def remove(path: str) -> None:
    """Delete the file ``path``; a missing file is fine."""
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    with _errors(path), contextlib.suppress(FileNotFoundError):  # S3 answers a missing key with success
        filesystem(path).rm_file(path)


def rmtree(path: str) -> None:
    """Delete the directory ``path`` and everything under it; a missing one is fine."""
    if not is_remote(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        return
    files = list_files(path)
    if files:
        with _errors(path):
            filesystem(path).rm(files)  # batched (S3: DeleteObjects, 1000 keys a request)
