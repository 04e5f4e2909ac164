"""Reading one work unit: its text streamed, parsed and converted, into Arrow fragments. No Beam here.

A unit's file is opened as a stream of its text (:mod:`~beam_pipelines.ingest_atlas.decompress`), read
in chunks of a few MB and cut into lines (:mod:`~beam_pipelines.ingest_atlas.lines`) or, for a JSON
array, into its elements (:mod:`~beam_pipelines.ingest_atlas.json_array`). Each result is converted
(:mod:`~beam_pipelines.ingest_atlas.convert`) and the rows and rejected lines go, in batches of
:data:`BATCH_ROWS`, to the unit's fragment files (:mod:`~beam_pipelines.ingest_atlas.fragments`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

import orjson
import pyarrow as pa

from beam_pipelines.common import storage
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
from beam_pipelines.ingest_atlas.decompress import CHUNK_BYTES, STREAM_ERRORS, open_stream
from beam_pipelines.ingest_atlas.discovery import BOM, WorkUnit, sniff_layout
from beam_pipelines.ingest_atlas.fragments import FragmentWriter, UnitCounts, UnitSummary
from beam_pipelines.ingest_atlas.json_array import INVALID, iter_json_values
from beam_pipelines.ingest_atlas.lines import iter_line_lists

BATCH_ROWS = 1 << 16  # rows per Arrow batch: bounds a worker's memory


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
            if first and lines and type(lines[0]) is bytes and lines[0].startswith(BOM):
                lines[0] = lines[0][len(BOM) :]
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
        if not self._progress_path:
            return
        state = {"bytes": self.bytes, "lines": self._lines()}
        if storage.is_remote(self._progress_path):
            with contextlib.suppress(OSError):  # progress is best effort
                storage.write_bytes(self._progress_path, json.dumps(state).encode())
        else:
            with atomic_path(self._progress_path) as tmp, open(tmp, "w") as f:
                json.dump(state, f)


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
