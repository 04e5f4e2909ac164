"""Finding RIPE Atlas result files and streaming each work unit into Arrow fragments. No Beam here.

Reading is streamed (a daily dump is gigabytes): files are read in chunks of a few MB and cut into
lines, or, for a JSON array (an API download), into its elements. Rows go to Arrow record batches
of :data:`BATCH_ROWS` and straight to an Arrow IPC *fragment* file per work unit, so a worker holds
one batch at a time and the runner only ever sees a small :class:`UnitSummary`. Once every unit is
done, :mod:`beam_pipelines.ingest_atlas.shards` cuts the fragments into Parquet shards.

A work unit is a whole file or, for a large JSON-lines file (plain, or bz2 once its block index is
built), a byte range of its text; a range owns the lines that *start* in it, and reports how many it
read so that line numbers of rejected lines can be made file-global when the shards are written.
gzip and xz files are read whole: their streams cannot be entered in the middle.

bz2 is decoded with ``indexed_bzip2`` on every core when it is installed (the standard library's decoder,
one core, otherwise): see :func:`bz2_decoder`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import orjson
import pyarrow as pa

from beam_pipelines.common import storage
from beam_pipelines.common.cores import usable_cores
from beam_pipelines.common.errors import InputError
from beam_pipelines.common.files import atomic_path
from beam_pipelines.ingest_atlas.convert import (
    REJECTED_SCHEMA,
    ROW_SCHEMA,
    RTT_MODES,
    SRC_MODES,
    RejectedResult,
    SkippedResult,
    clean_keys,
    convert_result,
    needs_key_cleanup,
    raw_text,
    rows_to_batch,
)
from beam_pipelines.ingest_atlas.decompress import (
    CHUNK_BYTES,
    STREAM_ERRORS,
    bz2_decoder,
    detect_compression,
    index_bz2,
    open_stream,
)
from beam_pipelines.ingest_atlas.json_array import INVALID, iter_json_values
from beam_pipelines.ingest_atlas.lines import iter_line_lists

BATCH_ROWS = 1 << 16  # rows per Arrow batch: bounds a worker's memory
DEFAULT_SPLIT_BYTES = 64 << 20  # plain JSON-lines files larger than this are read in ranges in parallel
BZ2_SPLIT_BYTES = DEFAULT_SPLIT_BYTES  # bz2 files larger than this (as stored) may be indexed and read in ranges
# ... on this many cores or more. The index costs one more decode of the whole file, which pays only when
# more cores read the ranges than one reader's decoder threads and parser keep busy (benchmarks/bz2_ingest_bench.py).
BZ2_SPLIT_MIN_CORES = 8

_BOM = b"\xef\xbb\xbf"


# --- finding and planning inputs -------------------------------------------------------------------


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



def sniff_layout(head: bytes) -> str:
    """``"array"`` when the text starts (after a BOM and white space) with ``[``, else ``"lines"``."""
    text = head[len(_BOM) :] if head.startswith(_BOM) else head
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
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        compression = detect_compression(path, head)
        layout = None if compression else sniff_layout(head)
        files.append(InputFile(index, path, size, compression, layout))
    return files


def input_size(path: str) -> int:
    """The size of an input file in bytes; :class:`InputError` naming it when it cannot be read."""
    try:
        return storage.size(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


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
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc

    if len(paths) <= 1 or total_bytes < (64 << 20):
        return {p: one(p) for p in paths}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(threads, len(paths))) as pool:
        return dict(zip(paths, pool.map(one, paths)))


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


# --- one work unit: stream -> rows and rejected lines -> Arrow fragments ----------------------------


COUNT_FIELDS = ("lines", "blank_lines", "records", "converted", "rows", "without_rows")  # plain counts of a unit


@dataclasses.dataclass
class UnitCounts:
    """What one work unit read. ``records`` = ``converted`` + ``skipped`` + ``rejected`` (JSON values seen)."""

    lines: int = 0  # physical lines (JSON lines) or values (JSON array) read
    blank_lines: int = 0
    records: int = 0
    converted: int = 0  # ping results that became rows
    rows: int = 0
    without_rows: int = 0  # converted results that gave no row (--rtt each and an empty `result` list)
    rejected: Counter = dataclasses.field(default_factory=Counter)
    skipped: Counter = dataclasses.field(default_factory=Counter)
    progress_lines: int = 0  # lines read so far, updated once per chunk while reading

    def totals(self) -> dict:
        """The finished counts, as :class:`UnitSummary` fields (reasons and types sorted)."""
        return {
            **{name: getattr(self, name) for name in COUNT_FIELDS},
            "rejected": dict(sorted(self.rejected.items())),
            "skipped": dict(sorted(self.skipped.items())),
        }


@dataclasses.dataclass(frozen=True)
class Fragment:
    """An Arrow IPC file of one work unit's rows (or rejected lines), in input order."""

    path: str
    batches: tuple[int, ...]  # rows in each record batch, in order

    @property
    def rows(self) -> int:
        return sum(self.batches)


@dataclasses.dataclass(frozen=True)
class UnitSummary:
    """What one work unit read and wrote. ``records`` = ``converted`` + skipped + rejected."""

    unit: str  # the unit's id, ``FILE-RANGE``
    file_index: int
    range_index: int
    path: str
    bytes_read: int
    lines: int
    blank_lines: int
    records: int
    converted: int
    rows: int
    without_rows: int
    rejected: dict[str, int]  # rejected lines by reason, sorted by reason
    skipped: dict[str, int]  # skipped results by type, sorted by type
    rows_fragment: Fragment | None  # None: the unit gave no row
    rejected_fragment: Fragment | None  # None: no line was rejected

    def fragment(self, kind: str) -> Fragment | None:
        """The fragment of ``kind``: ``"rows"`` or ``"rejected"``."""
        return {"rows": self.rows_fragment, "rejected": self.rejected_fragment}[kind]


class FragmentWriter:
    """Arrow IPC file written under a temporary name and renamed on close; nothing is created for no rows.

    A ``path`` in an object store is written in ``local_dir`` (this worker's disk) and uploaded on close.
    """

    def __init__(self, path: str, schema: pa.Schema, local_dir: str | None = None):
        self.path, self._schema = path, schema
        self._local = os.path.join(local_dir, os.path.basename(path)) if local_dir else None
        self._writer = None
        self._batches: list[int] = []

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None:
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self._writer = pa.ipc.new_file((self._local or self.path) + ".tmp", self._schema, options=options)
        self._writer.write_batch(batch)
        self._batches.append(batch.num_rows)

    def close(self) -> Fragment | None:
        if self._writer is None:
            return None
        self._writer.close()
        if self._local:
            storage.upload(self._local + ".tmp", self.path, verify_sha256=False)
        else:
            os.replace(self.path + ".tmp", self.path)
        return Fragment(self.path, tuple(self._batches))


def _rejected_batch(path: str, rejected: list[tuple]) -> pa.RecordBatch:
    numbers, reasons, raws = zip(*rejected)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([path] * len(rejected), pa.string()),
            pa.array(numbers, pa.int64()),
            pa.array(reasons, pa.string()),
            pa.array(raws, pa.string()),
        ],
        schema=REJECTED_SCHEMA,
    )


def ingest_stream(
    values: Iterator,
    layout: str,
    path: str,
    rtt: str,
    src: str,
    counts: UnitCounts,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Convert a stream into ``("rows", batch)`` and ``("rejected", batch)`` items, in input order.

    ``values`` is :func:`iter_line_lists` output for ``layout="lines"`` or :func:`iter_json_values`
    output for ``"array"``. Line numbers are 1-based and local to the stream. ``counts`` is complete
    once the generator is exhausted.
    """
    if rtt not in RTT_MODES or src not in SRC_MODES:
        raise ValueError(f"rtt must be one of {RTT_MODES} and src one of {SRC_MODES}")
    rows: list[tuple] = []
    rejected: list[tuple] = []
    rejected_counts, skipped_counts = counts.rejected, counts.skipped
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    number = records = blank = converted = without_rows = 0

    def reject(reason: str, raw) -> None:
        rejected.append((number, reason, raw_text(raw)))
        rejected_counts[reason] += 1

    def convert(obj, raw) -> None:
        nonlocal converted, without_rows
        if type(obj) is dict and needs_key_cleanup(raw):
            obj = clean_keys(obj)
        try:
            new = convert_result(obj, rtt, src)
        except RejectedResult as exc:
            reject(exc.reason, raw)
            return
        except SkippedResult as exc:
            skipped_counts[exc.type] += 1
            return
        converted += 1
        if new:
            rows.extend(new)
        else:
            without_rows += 1

    if layout == "lines":
        first = True
        for lines in values:
            if first and lines and type(lines[0]) is bytes and lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM) :]
            first = False
            for line in lines:
                number += 1
                if type(line) is not bytes:  # a LongLine
                    records += 1
                    reject("line_too_long", line.head)
                    rejected[-1] = (number, "line_too_long", f"{rejected[-1][2]}... ({line.length:,} bytes)")
                    continue
                if not line or line.isspace():
                    blank += 1
                    continue
                records += 1
                try:
                    obj = loads(line)
                except decode_error:
                    reject("invalid_json", line)
                    continue
                if type(obj) is list:
                    # A line holding an array of results: each element is a record of this line.
                    records += len(obj) - 1
                    for element in obj:
                        convert(element, orjson.dumps(element))
                else:
                    convert(obj, line)
            counts.progress_lines = number
            if len(rows) >= batch_rows:
                yield "rows", rows_to_batch(rows)
                rows = []
            if len(rejected) >= batch_rows:
                yield "rejected", _rejected_batch(path, rejected)
                rejected = []
    else:
        for value, text in values:
            number += 1
            records += 1
            if value is INVALID:
                reject("invalid_json", text)
            else:
                convert(value, text)
            if len(rows) >= batch_rows:
                counts.progress_lines = number
                yield "rows", rows_to_batch(rows)
                rows = []
            if len(rejected) >= batch_rows:
                yield "rejected", _rejected_batch(path, rejected)
                rejected = []
    if rows:
        yield "rows", rows_to_batch(rows)
    if rejected:
        yield "rejected", _rejected_batch(path, rejected)
    counts.lines += number
    counts.records += records
    counts.blank_lines += blank
    counts.converted += converted
    counts.without_rows += without_rows


class _CheckedStream:
    """A read-only stream whose read errors name the file (corrupt or truncated compressed data), and
    which reports progress to a small JSON file every few seconds for the driver to show."""

    def __init__(self, f, path: str, what: str, progress_path: str | None, lines=lambda: 0, every: float = 2.0):
        self._f, self._path, self._what = f, path, what
        self._progress_path, self._lines, self._every = progress_path, lines, every
        self._last = time.monotonic()
        self.bytes = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._f.read(n)
        except STREAM_ERRORS as exc:
            raise InputError(f"{self._path}: cannot read {self._what}: {exc}") from exc
        self.bytes += len(data)
        if self._progress_path and time.monotonic() - self._last >= self._every:
            self.report()
        return data

    def seek(self, offset: int) -> int:
        return self._f.seek(offset)

    def report(self) -> None:
        self._last = time.monotonic()
        if self._progress_path and storage.is_remote(self._progress_path):
            with contextlib.suppress(OSError):  # progress is best effort
                storage.write_bytes(self._progress_path, json.dumps({"bytes": self.bytes, "lines": self._lines()}).encode())
        elif self._progress_path:
            with atomic_path(self._progress_path) as tmp, open(tmp, "w") as f:
                json.dump({"bytes": self.bytes, "lines": self._lines()}, f)


def ingest_unit(
    unit: WorkUnit,
    tmp_dir: str,
    rtt: str = "min",
    src: str = "from",
    batch_rows: int = BATCH_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
) -> UnitSummary:
    """Read one work unit into fragment files under ``tmp_dir``; returns what it read and wrote.

    Raises :class:`InputError` naming the file when it cannot be read, is corrupt or is truncated.
    Progress goes to ``tmp_dir/progress/`` when that folder exists.
    """
    if storage.is_remote(tmp_dir):
        with storage.local_tmpdir() as local_dir:
            return _ingest_unit(unit, tmp_dir, rtt, src, batch_rows, chunk_bytes, local_dir)
    return _ingest_unit(unit, tmp_dir, rtt, src, batch_rows, chunk_bytes, None)


def _ingest_unit(unit, tmp_dir, rtt, src, batch_rows, chunk_bytes, local_dir) -> UnitSummary:
    base = os.path.join(tmp_dir, f"unit-{unit.unit_id}")
    rows_out = FragmentWriter(base + ".rows.arrow", ROW_SCHEMA, local_dir)
    rejected_out = FragmentWriter(base + ".rejected.arrow", REJECTED_SCHEMA, local_dir)
    progress_dir = os.path.join(tmp_dir, "progress")
    # An object store has no folders: remote scratch always gets progress markers.
    wanted = storage.is_remote(tmp_dir) or os.path.isdir(progress_dir)
    progress = os.path.join(progress_dir, f"unit-{unit.unit_id}.json") if wanted else None
    counts = UnitCounts()
    what = f"{unit.compression} stream" if unit.compression else "file"
    try:
        raw = open_stream(unit.path, unit.compression, unit.blocks)
    except OSError as exc:
        raise InputError(f"{unit.path}: cannot open ({exc.strerror or exc})") from exc
    with raw:
        f = _CheckedStream(raw, unit.path, what, progress, lambda: counts.progress_lines)
        layout, head = unit.layout, b""
        if layout is None:
            head = f.read(1 << 16)
            layout = sniff_layout(head)
        if layout == "lines":
            values = iter_line_lists(f, unit.start, unit.end, head, chunk_bytes)
        else:
            values = iter_json_values(f, head, chunk_bytes)
        for kind, batch in ingest_stream(values, layout, unit.path, rtt, src, counts, batch_rows):
            if kind == "rows":
                rows_out.write(batch)
                counts.rows += batch.num_rows
            else:
                rejected_out.write(batch)
        counts.progress_lines = counts.lines
        f.report()
    return UnitSummary(
        unit=unit.unit_id,
        file_index=unit.file_index,
        range_index=unit.range_index,
        path=unit.path,
        bytes_read=f.bytes,
        **counts.totals(),
        rows_fragment=rows_out.close(),
        rejected_fragment=rejected_out.close(),
    )
