"""Finding RIPE Atlas result files and planning the work units that read them. No Beam here.

Each input file is opened once while planning, to learn its size, compression and (plain files) layout:
JSON lines (the daily dumps) or a JSON array (API downloads); its sha256 identifies it in the manifest.
A work unit is a whole file or, for a large JSON-lines file (plain, or bz2 once its block index is
built), a byte range of its text; a range owns the lines that *start* in it, and reports how many it
read so that line numbers of rejected lines can be made file-global when the shards are written.
gzip and xz files are read whole: their streams cannot be entered in the middle.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from beam_pipelines.common import storage
from beam_pipelines.common.cores import usable_cores
from beam_pipelines.common.errors import InputError
from beam_pipelines.ingest_atlas.decompress import bz2_decoder, detect_compression, index_bz2

DEFAULT_SPLIT_BYTES = 64 << 20  # plain JSON-lines files larger than this are read in ranges in parallel
BZ2_SPLIT_BYTES = DEFAULT_SPLIT_BYTES  # bz2 files larger than this (as stored) may be indexed and read in ranges
# ... on this many cores or more. The index costs one more decode of the whole file, which pays only when
# more cores read the ranges than one reader's decoder threads and parser keep busy (benchmarks/bz2_ingest_bench.py).
BZ2_SPLIT_MIN_CORES = 8

BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some exports start with


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One input file as found at planning time."""

    index: int
    path: str
    bytes: int
    compression: str | None  # "gzip", "bz2", "xz" or None
    layout: str | None  # "lines" or "array" for plain files and indexed bz2 files; else None (found while reading)
    text_bytes: int | None = None  # the decompressed size, once known (an indexed bz2 file)
    blocks: tuple[tuple[int, int], ...] | None = None  # an indexed bz2 file's (bit offset, text offset) per block


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """One unit of reading work: a whole file, or the lines of a plain file that start in [start, end)."""

    file_index: int
    path: str
    compression: str | None
    layout: str | None
    range_index: int
    start: int
    end: int | None  # None: to the end of the file
    blocks: tuple[tuple[int, int], ...] | None = None  # a bz2 range: the file's block index, to seek in its text

    @property
    def unit_id(self) -> str:
        return f"{self.file_index:05d}-{self.range_index:05d}"


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Sorted, de-duplicated files matching any of ``patterns`` (files, directories or globs; ``**`` recurses).

    Raises :class:`InputError` for a pattern that matches no file: a typo must not make an empty dataset.
    """
    paths = set()
    for pattern in patterns:
        if storage.is_remote(pattern):  # s3://, gs://: through common.storage (fsspec)
            storage.check_location(pattern)
            if not any(c in pattern for c in "*?[") and not storage.exists(pattern):
                pattern = storage.join(pattern.rstrip("/"), "*")  # a "directory" (key prefix)
            found = storage.glob(pattern)
        else:
            if os.path.isdir(pattern):
                pattern = os.path.join(pattern, "*")
            found = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
        if not found:
            raise InputError(f"input {pattern!r} matches no file")
        paths.update(found)
    return sorted(paths)


def _unreadable(path: str, exc: OSError) -> InputError:
    return InputError(f"{path}: cannot read ({exc.strerror or exc})")


def sniff_layout(head: bytes) -> str:
    """``"array"`` when the text starts (after a BOM and white space) with ``[``, else ``"lines"``."""
    text = head[len(BOM) :] if head.startswith(BOM) else head
    text = text.lstrip(b" \t\r\n")
    return "array" if text.startswith(b"[") else "lines"


def inspect_inputs(paths: Sequence[str], first_index: int = 0) -> list[InputFile]:
    """Open each file once to learn its size, compression and (plain files) layout.

    Files are numbered from ``first_index`` (an appended version numbers its files after the earlier ones').
    """
    files = []
    for index, path in enumerate(paths, start=first_index):
        try:
            size = storage.size(path)
            with storage.open_read(path) as f:
                head = f.read(1 << 16)
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        compression = detect_compression(path, head)
        layout = None if compression else sniff_layout(head)
        files.append(InputFile(index, path, size, compression, layout))
    return files


def input_size(path: str) -> int:
    """The size of an input file in bytes; :class:`InputError` naming it when it cannot be read."""
    try:
        return storage.size(path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def hash_inputs(paths: Sequence[str], total_bytes: int = 0, threads: int = 4) -> dict[str, str]:
    """The sha256 of each file's bytes (as stored, before decompression), ``path -> hex digest``.

    When the files hold ``total_bytes`` >= 64 MiB, a few at a time in threads: hashlib releases the GIL on
    large reads, and an object store's latency is hidden (below that a thread's own S3 client, ~0.1-0.4 s
    to make, costs more than it saves). The hashes identify a converted file in the manifest
    (``ingest_atlas --append``).
    """

    def one(path: str) -> str:
        try:
            return storage.sha256(path)
        except OSError as exc:
            raise _unreadable(path, exc) from exc

    if len(paths) <= 1 or total_bytes < (64 << 20):
        return {p: one(p) for p in paths}
    with ThreadPoolExecutor(max_workers=min(threads, len(paths))) as pool:
        return dict(zip(paths, pool.map(one, paths)))


def index_bz2_files(files: Sequence[InputFile], min_bytes: int = BZ2_SPLIT_BYTES) -> list[InputFile]:
    """``files``, each bz2 file of more than ``min_bytes`` (as stored) with its block index
    (:func:`index_bz2`), so that :func:`plan_units` cuts its text into ranges like a plain file's.

    The files are returned as they are (each read whole, its decoder on every core) on fewer than
    :data:`BZ2_SPLIT_MIN_CORES` usable cores, where the index's extra decode costs more than the ranges
    gain, and without ``indexed_bzip2`` (the standard library cannot seek in a bz2 stream).
    """
    if bz2_decoder() != "indexed_bzip2" or usable_cores() < BZ2_SPLIT_MIN_CORES:
        return list(files)
    indexed = []
    for f in files:
        if f.compression == "bz2" and f.blocks is None and f.bytes > min_bytes:
            size, blocks, head = index_bz2(f.path)
            f = dataclasses.replace(f, layout=sniff_layout(head), text_bytes=size, blocks=blocks)
        indexed.append(f)
    return indexed


def plan_units(files: Sequence[InputFile], split_bytes: int = DEFAULT_SPLIT_BYTES) -> list[WorkUnit]:
    """Work units in (file, range) order: JSON-lines files are cut into ranges of ``split_bytes`` of text,
    plain files and the bz2 files that :func:`index_bz2_files` indexed alike."""
    units = []
    for f in files:
        text_bytes = f.bytes if f.compression is None else f.text_bytes
        if f.layout == "lines" and text_bytes is not None and text_bytes > split_bytes:
            blocks = f.blocks if f.compression else None
            n = -(-text_bytes // split_bytes)
            for r in range(n):
                start, end = r * split_bytes, min((r + 1) * split_bytes, text_bytes)
                units.append(WorkUnit(f.index, f.path, f.compression, "lines", r, start, end, blocks))
        else:
            units.append(WorkUnit(f.index, f.path, f.compression, f.layout, 0, 0, None))
    return units
