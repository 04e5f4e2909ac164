"""Compressed inputs: telling gzip, bz2 and xz apart, and opening a file as a stream of its text. No Beam here.

gzip and xz streams cannot be entered in the middle, so such files are read whole. bz2 is decoded with
``indexed_bzip2`` on every core when it is installed (the standard library's decoder, one core,
otherwise): see :func:`bz2_decoder`. With a bz2 file's block index (:func:`index_bz2`) its text can be
sought in, so a large one is read in ranges like a plain file.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib

from beam_pipelines.common import storage
from beam_pipelines.common.cores import usable_cores
from beam_pipelines.common.errors import InputError

try:
    import indexed_bzip2
except ImportError:  # optional: the standard library's decoder reads bz2 then (one core, whole files)
    indexed_bzip2 = None

CHUNK_BYTES = 4 << 20  # bytes per read from an input stream

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_SUFFIX = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz"}
# A stream error from a decompressor: the file is corrupt or truncated.
STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def detect_compression(path: str, head: bytes) -> str | None:
    """The compression of a file from its first bytes; its suffix must not claim another one."""
    found = next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)
    claimed = _SUFFIX.get(os.path.splitext(path)[1].lower())
    if claimed and found != claimed:
        raise InputError(f"{path}: named like a {claimed} file but is not one (first bytes {head[:6]!r})")
    return found


def bz2_decoder() -> str:
    """``"indexed_bzip2"`` when that package is installed (bz2 is decoded on every core, and a large
    file can be indexed and read in ranges), else ``"bz2"`` (the standard library: one core, whole files)."""
    return "bz2" if indexed_bzip2 is None else "indexed_bzip2"


def _bz2_error(exc: BaseException) -> str:
    text = str(exc).strip()
    # A cut stream surfaces from the decoder as a bare C++ exception, with no message of its own.
    return "the file is truncated or corrupt" if text in ("", "std::exception") else text


class _ParallelBz2:
    """The text of a bz2 file, decoded by ``indexed_bzip2`` on every core; seekable in the text once given
    the file's block index (:func:`index_bz2`), else read from the start.

    The decoder reports a corrupt or truncated stream as ``ValueError`` or ``RuntimeError``: they come out
    as :class:`InputError` naming the file, as the standard library's errors (:data:`STREAM_ERRORS`) do
    where the stream is read. Its threads must be joined before the interpreter exits (else it aborts), so
    it is always closed, also when opening fails half-way.
    """

    def __init__(self, path: str, blocks=None, parallelization: int | None = None):
        self._path = path
        # A local file is opened by the decoder itself (no Python call per read); a URL through the store.
        self._raw = storage.open_read(path) if storage.is_remote(path) else None
        self._f = None
        try:
            self._f = self._call(
                indexed_bzip2.open, self._raw or path, parallelization=parallelization or usable_cores()
            )
            if blocks is not None:
                self._call(self._f.set_block_offsets, dict(blocks))
        except BaseException:
            self.close()
            raise

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{self._path}: cannot read bz2 stream: {_bz2_error(exc)}") from exc

    def read(self, n: int = -1) -> bytes:
        return self._call(self._f.read, n)

    def seek(self, offset: int) -> int:
        return self._call(self._f.seek, offset)

    def block_offsets(self) -> dict[int, int]:
        """``{bit offset in the file: offset in the text}`` per block; decodes the whole file (on every core)."""
        return self._call(self._f.block_offsets)

    def size(self) -> int:
        """The size of the text (after :meth:`block_offsets`)."""
        return self._call(self._f.size)

    def close(self) -> None:
        try:
            if self._f is not None:
                self._f.close()
                self._f = None
        finally:
            if self._raw is not None:
                self._raw.close()
                self._raw = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def index_bz2(path: str) -> tuple[int, tuple[tuple[int, int], ...], bytes]:
    """The block index of a bz2 file: ``(text bytes, ((bit offset, text offset), ...), first 64 KiB of text)``.

    Building it decodes the whole file once, on every core. Raises :class:`InputError` naming the file when
    it is corrupt or truncated.
    """
    with _ParallelBz2(path) as f:
        blocks = tuple(sorted(f.block_offsets().items()))
        size = f.size()
        f.seek(0)
        head = f.read(1 << 16)
    return size, blocks, head


def open_stream(path: str, compression: str | None, blocks=None):
    """A binary file object of the decompressed contents (a URL is streamed through
    :mod:`~beam_pipelines.common.storage`).

    bz2 is decoded by ``indexed_bzip2`` on every core when it is installed and this process may use more
    than one, else by the standard library (on one core it is the faster of the two, as indexed_bzip2's
    README says of its serial decoder); ``blocks`` (the file's index from :func:`index_bz2`) makes a bz2
    stream seekable in its text, which only indexed_bzip2 can do.
    """
    if compression == "bz2" and (blocks is not None or (usable_cores() > 1 and bz2_decoder() == "indexed_bzip2")):
        return _ParallelBz2(path, blocks)
    raw = storage.open_read(path)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if compression == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw
