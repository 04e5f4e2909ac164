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

Which fsspec filesystem serves a URL, under which options (:func:`~beam_pipelines.common.object_store.configure`),
and how a store's failures become one clear error line, is :mod:`beam_pipelines.common.object_store`.
:func:`check_location` turns the three common mistakes (a bucket that does not exist, no credentials, access
denied) into one :class:`~beam_pipelines.common.errors.InputError` naming the URL, before anything is written.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

from beam_pipelines.common import object_store
from beam_pipelines.common.errors import InputError
from beam_pipelines.common.files import atomic_path, sha256_file

CHUNK = 1 << 22  # bytes per read when hashing or copying: 4 MiB


def is_remote(path: str) -> bool:
    """Whether ``path`` is an object-store URL (anything but a local path)."""
    return object_store.scheme(path) != ""


def join(base: str, *parts: str) -> str:
    """``base/part/...``; URLs are joined with ``/`` (posixpath.join does exactly that for them)."""
    return os.path.join(base, *parts)


def check_location(url: str) -> None:
    """Fail fast, with one :class:`InputError` line naming ``url``, when its bucket does not exist, there
    are no credentials, or access is denied. A local path passes; another store is checked for an
    installed filesystem (and, on ``gs://``, credentials) only.

    For ``s3://`` this asks the bucket itself (HEAD bucket) with the same s3fs client, options and
    environment as every later read and write.
    """
    if not is_remote(url):
        return
    fs = object_store.filesystem(url)
    if object_store.scheme(url) != "s3":
        return
    try:
        fs.call_s3("head_bucket", Bucket=object_store.bucket_of(url))
    except Exception as exc:
        code = object_store.http_status(exc)
        if code == 404:
            raise InputError(f"{url}: bucket {object_store.bucket_of(url)!r} does not exist") from exc
        line = object_store.explain(url, exc)
        if line is not None or code == 403:
            raise InputError(line or f"{url}: access denied") from exc
        raise InputError(f"{url}: cannot reach the bucket ({object_store.first_line(str(exc))})") from exc


# --- reading -------------------------------------------------------------------------------------


def exists(path: str) -> bool:
    """Whether the file ``path`` exists (a key prefix with objects under it is not a file)."""
    if not is_remote(path):
        return os.path.isfile(path)
    with object_store.store_errors(path):
        return object_store.filesystem(path).isfile(path)


def isdir(path: str) -> bool:
    """A local directory, or a URL prefix under which at least one object exists."""
    if not is_remote(path):
        return os.path.isdir(path)
    return bool(list_files(path))


def size(path: str) -> int:
    """Size of the file ``path`` in bytes."""
    if not is_remote(path):
        return os.path.getsize(path)
    with object_store.store_errors(path):
        return int(object_store.filesystem(path).size(path))


def list_files(prefix: str) -> list[str]:
    """Every file under the directory ``prefix``, at any depth, sorted (a missing directory: empty)."""
    if not is_remote(prefix):
        out = []
        for root, _, names in os.walk(prefix):
            out.extend(os.path.join(root, n) for n in names)
        return sorted(out)
    base = prefix.rstrip("/") + "/"
    with object_store.store_errors(prefix):
        found = object_store.filesystem(prefix).find(base)
    protocol = object_store.scheme(prefix)
    # A key ending in "/" is a folder marker some tools leave, not a file.
    urls = (object_store.with_protocol(protocol, p) for p in found)
    return sorted(u for u in urls if u.startswith(base) and not u.endswith("/"))


def listdir(path: str) -> list[str]:
    """Names of the entries directly in the directory ``path`` (folders of a URL are key prefixes)."""
    if not is_remote(path):
        return sorted(os.listdir(path))
    base = path.rstrip("/") + "/"
    return sorted({p[len(base) :].split("/", 1)[0] for p in list_files(path)})


def glob(pattern: str) -> list[str]:
    """Sorted files matching ``pattern`` (``*`` within a name, ``**`` across folders)."""
    if not is_remote(pattern):
        return sorted(p for p in _glob.glob(pattern, recursive=True) if os.path.isfile(p))
    with object_store.store_errors(pattern):
        found = object_store.filesystem(pattern).glob(pattern, detail=True)
    protocol = object_store.scheme(pattern)
    files = (p for p, info in found.items() if info.get("type") == "file" and not p.endswith("/"))
    return sorted(object_store.with_protocol(protocol, p) for p in files)


def open_read(path: str):
    """A seekable binary file object for reading ``path``."""
    if not is_remote(path):
        return open(path, "rb")
    with object_store.store_errors(path):
        return object_store.filesystem(path).open(path, "rb")


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    with object_store.store_errors(path):
        return object_store.filesystem(path).cat_file(path)


def read_json(path: str):
    return json.loads(read_bytes(path))


def sha256(path: str) -> str:
    """sha256 hex digest of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open_read(path) as f, object_store.store_errors(path):
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(path: str, local: str) -> None:
    """Copy ``path`` (a URL or a local file) to the local file ``local`` (via a temporary name)."""
    with atomic_path(local) as tmp, open_read(path) as src, open(tmp, "wb") as dst, object_store.store_errors(path):
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
    with object_store.store_errors(path):
        object_store.filesystem(path).pipe_file(path, bytes(data))
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
        object_store.filesystem(path).pipe_file(path, bytes(data), mode="create")
    except FileExistsError:  # S3's 412 and GCS's 412: the object exists
        return False
    except Exception as exc:
        if object_store.http_status(exc) in (409, 412):  # 409: S3's answer to a concurrent conditional write
            return False
        raise object_store.wrap_error(path, exc) from exc
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
    want_sha = sha256_file(local) if verify_sha256 else None
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with atomic_path(path) as tmp:
            shutil.copyfile(local, tmp)
    else:
        with object_store.store_errors(path):
            object_store.filesystem(path).put_file(local, path)
    found = size(path)
    if found != want_size:
        raise OSError(f"{path}: uploaded {want_size} bytes but the store holds {found}")
    if verify_sha256:
        got = sha256(path)
        if got != want_sha:
            raise OSError(f"{path}: sha256 of the uploaded object is {got[:12]}, the local file's {want_sha[:12]}")
    return want_size, want_sha


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
    if object_store.scheme(src) == object_store.scheme(dst):
        with object_store.store_errors(dst):
            fs = object_store.filesystem(dst)
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
    # S3 answers a missing key with success
    with object_store.store_errors(path), contextlib.suppress(FileNotFoundError):
        object_store.filesystem(path).rm_file(path)


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
        with object_store.store_errors(path):
            object_store.filesystem(path).rm(files)  # batched (S3: DeleteObjects, 1000 keys a request)
