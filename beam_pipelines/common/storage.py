"""URL-aware file operations: local paths as before, object stores (``s3://``, ``gs://``, any filesystem
Beam knows) through Apache Beam's :class:`~apache_beam.io.filesystems.FileSystems`.

Every job and the trainer's staging go through this one module for anything that may live in an object
store, so no code assumes a shared POSIX disk (docs/object-storage.md). Local paths keep taking the plain
``os`` path (same files, same atomic renames as before); Beam is imported only when a URL is met, so the
data contract (``beam_pipelines.dataset``) and the trainer stay Beam-free for local data.

Object stores have no rename and no partial objects: a file is written in one piece (Beam's uploader),
and a file that must be verified (ArrayRecord, anything listed in a manifest) is written to a local
temporary file first, uploaded, then read back from the store and checked (size and sha256) with
:func:`upload`. ArrayRecord's writer only writes local files, which is why this is not a stream.

Configuration: :func:`configure` hands Beam's pipeline options (``--s3_endpoint_url``,
``--s3_access_key_id``, ..., GCS's options) to ``FileSystems``; without them Beam's S3 client (boto3)
reads the standard AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, the
shared credentials file) and GCS uses application-default credentials. :func:`check_location` turns the
three common mistakes (a bucket that does not exist, no credentials, access denied) into one
:class:`~beam_pipelines.common.errors.InputError` naming the URL, before anything is written.

No Apache Beam import at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
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
    """The options of Beam's filesystems (S3, GCS, HDFS, Azure) out of a ``PipelineOptions``, as a small
    dict that a job context can carry to workers that did not get the pipeline's options (Dask)."""
    everything = pipeline_options.get_all_options(drop_default=True)
    return {k: v for k, v in everything.items() if k.startswith(_FS_OPTION_PREFIXES) and v is not None}


def configure(options: dict | None) -> None:
    """Make Beam's ``FileSystems`` (in this process) use ``options`` (see :func:`filesystem_options`).

    Idempotent and cheap; a worker calls it with its job context's options before touching a URL.
    """
    global _options
    options = dict(options or {})
    if options == _options:
        return
    _options = options
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions.from_dictionary(options))


def current_options() -> dict:
    """The options :func:`configure` was last given."""
    return dict(_options)


def _fs():
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.value_provider import RuntimeValueProvider

    if FileSystems._pipeline_options is None and RuntimeValueProvider.runtime_options is None:
        # Beam's object-store clients need some options object even when everything comes from the environment.
        from apache_beam.options.pipeline_options import PipelineOptions

        FileSystems.set_options(PipelineOptions.from_dictionary(_options))
    return FileSystems


_thread = threading.local()


def _s3():
    """Beam's S3 I/O object (``apache_beam.io.aws.s3io.S3IO``), one per thread, reused.

    ``FileSystems`` builds a new one, and so a new boto3 client (about 0.1 s), for every call; a job
    makes hundreds of small calls (markers, sizes, listings), so the one Beam object is kept instead.
    One per thread because Beam's client keeps the state of its current download.
    """
    fs = _fs()
    options = fs._pipeline_options
    cached = getattr(_thread, "s3", None)
    if cached is None or cached[0] is not options:
        from apache_beam.io.aws import s3io

        cached = (options, s3io.S3IO(options=options))
        _thread.s3 = cached
    return cached[1]


# --- errors --------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    for attr in ("code", "status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
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
        details = getattr(e, "exception_details", None)
        if isinstance(details, dict):
            todo.extend(v for v in details.values() if isinstance(v, BaseException))
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)


def explain(url: str, exc: BaseException) -> str | None:
    """One line for the common object-store failures (no bucket, no credentials, access denied), else None."""
    for e in _causes(exc):
        text = f"{type(e).__name__}: {e}"
        code = _status(e)
        if "NoCredentials" in text or "Unable to locate credentials" in text or "DefaultCredentialsError" in text:
            return (
                f"{url}: no credentials for {scheme(url)}:// (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"a profile, or --s3_access_key_id/--s3_secret_access_key; for gs://, application-default credentials)"
            )
        if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            return f"{url}: bucket {bucket_of(url)!r} does not exist"
        if code == 403 or "AccessDenied" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
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
    are no credentials, or access is denied. A local path, or a store this module has no check for, passes.

    For ``s3://`` this asks the bucket itself (HEAD bucket) through Beam's own boto3 client wrapper, so it
    honours the same options and environment as every later read and write, and it never waits through
    Beam's retries (Beam retries a request that failed without an HTTP status, such as missing credentials).
    """
    if scheme(url) == "s3":
        from apache_beam.io.aws.clients.s3 import boto3_client
        from apache_beam.options.pipeline_options import PipelineOptions

        try:
            client = boto3_client.Client(options=PipelineOptions.from_dictionary(_options)).client
        except AssertionError as exc:  # Beam's "Missing boto3 requirement"
            raise InputError(f"{url}: s3:// needs boto3 (pip install 'ping-llm[aws]')") from exc
        import boto3

        if not _options.get("s3_access_key_id") and boto3.session.Session().get_credentials() is None:
            raise InputError(explain(url, RuntimeError("Unable to locate credentials")))
        try:
            client.head_bucket(Bucket=bucket_of(url))
        except Exception as exc:
            code = _status(exc)
            if code == 404:
                raise InputError(f"{url}: bucket {bucket_of(url)!r} does not exist") from exc
            line = explain(url, exc)
            if line is not None or code == 403:
                raise InputError(line or f"{url}: access denied") from exc
            raise InputError(f"{url}: cannot reach the bucket ({_first_line(str(exc))})") from exc
    elif is_remote(url):
        with _errors(url):
            _fs().get_filesystem(url)  # an unknown scheme (or a missing extra) fails here, naming the URL


# --- reading -------------------------------------------------------------------------------------


def exists(path: str) -> bool:
    """Whether the file ``path`` exists."""
    if not is_remote(path):
        return os.path.isfile(path)
    with _errors(path):
        return _s3().exists(path) if scheme(path) == "s3" else _fs().exists(path)


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
        if scheme(path) == "s3":
            return _s3().size(path)
        return _fs().match([path])[0].metadata_list[0].size_in_bytes


def list_files(prefix: str) -> list[str]:
    """Every file under the directory ``prefix``, at any depth, sorted (a missing directory: empty)."""
    if not is_remote(prefix):
        out = []
        for root, _, names in os.walk(prefix):
            out.extend(os.path.join(root, n) for n in names)
        return sorted(out)
    base = prefix.rstrip("/") + "/"
    with _errors(prefix):
        if scheme(prefix) == "s3":
            return sorted(p for p, _ in _s3().list_files(base))
        found = _fs().match([base + "**"])[0].metadata_list
    return sorted(m.path for m in found)


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
        found = _fs().match([pattern])[0].metadata_list
    return sorted(m.path for m in found if not m.path.endswith("/"))


def open_read(path: str):
    """A seekable binary file object for reading ``path``."""
    if not is_remote(path):
        return open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes

    with _errors(path):
        if scheme(path) == "s3":
            return _s3().open(path, "rb")
        return _fs().open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f, _errors(path):
        return f.read()


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


def _create(path: str):
    from apache_beam.io.filesystem import CompressionTypes

    if scheme(path) == "s3":
        return _s3().open(path, "wb")
    return _fs().create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole: locally through a temporary name and a rename, to a store in one
    upload whose size is checked afterwards."""
    if not is_remote(path):
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    with _errors(path), _create(path) as f:
        f.write(data)
    found = size(path)
    if found != len(data):
        raise OSError(f"{path}: wrote {len(data)} bytes but the store holds {found}")


def create_exclusive(path: str, data: bytes) -> bool:
    """Create the file ``path`` holding ``data`` only if no file of that name exists; True if this call did.

    Locally ``O_CREAT | O_EXCL``. On S3 a conditional write (``If-None-Match: *``, through the boto3 client
    inside Beam's own S3 wrapper, since ``FileSystems`` has no conditional create): the store itself lets
    exactly one writer win. Elsewhere (GCS, ...), best effort: create when absent, then read back and keep
    it only if it holds ``data`` (two writers starting within the same few milliseconds may both win).
    """
    if not is_remote(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if scheme(path) == "s3":
        bucket, key = bucket_of(path), key_of(path)
        try:
            _s3().client.client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as exc:
            if _status(exc) in (409, 412):  # 412: the object exists; 409: a concurrent conditional write
                return False
            raise _wrap(path, exc) from exc
        return True
    if exists(path):
        return False
    write_bytes(path, data)
    return read_bytes(path) == data


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
        with _errors(path), open(local, "rb") as src, _create(path) as dst:
            shutil.copyfileobj(src, dst, CHUNK)
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
    with _errors(dst):
        if scheme(src) == "s3" and scheme(dst) == "s3":
            _s3().rename(src, dst)
        else:
            _fs().rename([src], [dst])
    found = size(dst)
    if found != want:
        raise OSError(f"{dst}: moved {want} bytes but the store holds {found}")


def remove(path: str) -> None:
    """Delete the file ``path``; a missing file is fine."""
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    if exists(path):
        with _errors(path):
            if scheme(path) == "s3":
                _s3().delete(path)
            else:
                _fs().delete([path])


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
            if scheme(path) == "s3":
                failed = [(p, e) for p, e in _s3().delete_files(files) if e is not None]
                if failed:
                    raise OSError(f"{failed[0][0]}: cannot be deleted ({failed[0][1]})")
            else:
                _fs().delete(files)
