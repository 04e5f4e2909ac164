"""The work of each pretokenize stage, as plain functions over one task, bucket or the final summary.

The Beam DoFns in :mod:`beam_pipelines.pretokenize` are thin adapters over these, so each stage can be
tested (and reasoned about) without Beam. Temporary files live under the job's scratch location
(``OUT/_tmp``, or a folder under Beam's ``--temp_location``) and have names derived only from task and
bucket ids, so a retried task overwrites its own files and the result does not depend on the runner or
the number of workers.

Output and scratch may be object-store URLs (docs/object-storage.md): every file is then written to a
worker-local temporary file and uploaded through :mod:`beam_pipelines.common.storage` (ArrayRecord files
checked by size and sha256 of what the store holds), records get their final names only at
:func:`finalize`, after every file was verified, and the manifest is written last.

Stages hand each other typed summaries (:class:`EncodeSummary`, :class:`RecordsSummary`): small, frozen
and picklable, so any runner can ship them, and :func:`finalize` tells them apart by type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.common import lifecycle, storage
from beam_pipelines.common.memory import keep_freed_memory
from beam_pipelines.common.parquet import BATCH_ROWS, ReadTask, parquet_file, plain_batch, read_task
from beam_pipelines.common.progress import write_marker
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from beam_pipelines.dataset.records import write_records
from beam_pipelines.pretokenize.packing import PackResult, pack_sorted, plan_runs
from beam_pipelines.pretokenize.splitting import bucket_of, source_hash, split_by_source, split_by_time
from tokenizer import get_scheme
from tokenizer.spans import spans

TMP_DIR = "_tmp"
REJECTED_DIR = "rejected"
# Read as Arrow dictionaries straight from the Parquet dictionary pages: the encoder then parses each
# dictionary entry, and neither materializes nor hashes a string per row (reading and address lookup took
# about 0.2 us a row less on 2.5M generated rows, measured apart; the whole encode stage about 0.1 us less).
ADDRESS_COLUMNS = ("src_addr", "dst_addr")
_FLUSH_ROWS = 1 << 19  # buffered accepted rows per task before bucket files are appended to
REJECTED_FILE_ROWS = 1 << 20  # rejected rows per file of OUT/rejected/ at most
NOTHING_ENCODED = "nothing_encoded.json"  # in the scratch folder: finalize found no accepted row (see finalize)

_PART_SCHEMA = pa.schema(
    [
        ("split", pa.int8()),
        ("family", pa.int8()),
        ("src_hi", pa.uint64()),
        ("src_lo", pa.uint64()),
        ("timestamp", pa.int64()),
        ("file", pa.int32()),
        ("row", pa.int64()),
        ("tokens", pa.large_list(pa.uint16())),
    ]
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobContext(lifecycle.JobContext):
    """Everything a pretokenize worker needs to know about the job (small and picklable); the fields every
    job shares (output, scratch, storage options, version) are :class:`~beam_pipelines.common.lifecycle.JobContext`'s."""

    TMP_DIR: ClassVar[str] = TMP_DIR

    seq_len: int
    fractions: tuple[float, float, float]
    split_by: str  # "src" or "time"
    cut_points: tuple[int, ...]  # time mode only
    num_buckets: int
    compression: str
    tmp_compression: str  # Arrow IPC compression of the bucket files: none, lz4 or zstd
    inputs: tuple[dict, ...]  # path, bytes, rows, sha256 per input file
    options: dict  # the options that shape the output (recorded in the manifest)
    fingerprint: str
    tokenizer: str = "v1"  # the tokenizer scheme's name (tokenizer.get_scheme)

    @property
    def scheme(self):
        return get_scheme(self.tokenizer)

    def bucket_dir(self, bucket: int) -> str:
        return os.path.join(self.tmp, "buckets", f"{bucket:05d}")

    def prepare_worker(self) -> None:
        """Set up the process that runs a stage: the job's storage options, and freed array memory kept
        for the next batch (:func:`beam_pipelines.common.memory.keep_freed_memory`)."""
        super().prepare_worker()
        keep_freed_memory()

    def progress(self, name: str, payload: dict) -> None:
        """Leave a small marker that the launcher's progress display polls (works on any shared FS)."""
        directory = os.path.join(self.tmp, "progress")
        storage.makedirs(directory)
        write_marker(directory, name, **payload)


@dataclasses.dataclass(frozen=True)
class EncodeSummary:
    """What encoding one task (consecutive row groups, see :class:`~beam_pipelines.common.parquet.ReadTask`) read and wrote."""

    task: str  # the task id; finalize orders summaries by it
    file_index: int  # the input file of the task's first row
    rows: int
    accepted: int
    rejected: dict[str, int]  # rejected rows by reason, sorted by reason
    buckets: dict[int, str]  # bucket -> this task's part file of accepted rows
    rejected_file: str | None  # scratch Parquet file of this task's rejected rows (None: none)

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())


@dataclasses.dataclass(frozen=True)
class RecordsSummary:
    """One bucket's records of one split, in a verified temporary ArrayRecord file."""

    bucket: int
    split: str
    tmp_path: str
    records: int
    bytes: int
    sha256: str
    measurements: int
    tokens: int  # non-PAD tokens
    pad_tokens: int
    sources: int
    continuous: int  # measurements whose predecessor in the record is of the same source


# --- stage 1 + 2: read and encode one task, partition by bucket -----------------------------------


def _ipc_codec(name: str) -> str | None:
    return None if name == "none" else name


class _BucketWriters:
    """Append-only Arrow IPC files, one per bucket, opened on first use.

    With object-store scratch, each file is written in ``local_dir`` (this worker's temporary disk) and
    uploaded by :meth:`publish` once complete (its size checked), since a store has no appendable files.
    """

    def __init__(self, ctx: JobContext, task_id: str, local_dir: str | None = None):
        self._ctx, self._task_id, self._local_dir = ctx, task_id, local_dir
        self._writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        self._local: dict[int, str] = {}
        self.paths: dict[int, str] = {}

    def write(self, bucket: int, batch: pa.RecordBatch) -> None:
        if bucket not in self._writers:
            directory = self._ctx.bucket_dir(bucket)
            path = os.path.join(directory, f"{self._task_id}.arrow")
            if self._local_dir is None:
                os.makedirs(directory, exist_ok=True)
                local = path
            else:
                local = os.path.join(self._local_dir, f"bucket-{bucket:05d}.arrow")
            self._writers[bucket] = pa.ipc.new_file(
                local, _PART_SCHEMA, options=pa.ipc.IpcWriteOptions(compression=_ipc_codec(self._ctx.tmp_compression))
            )
            self._local[bucket] = local
            self.paths[bucket] = path
        self._writers[bucket].write_batch(batch)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()

    def publish(self) -> None:
        """Upload the closed files to their scratch names (nothing to do for local scratch)."""
        if self._local_dir is not None:
            for bucket, path in sorted(self.paths.items()):
                storage.upload(self._local[bucket], path, verify_sha256=False)


_PART_COLUMNS = ("split", "family", "src_hi", "src_lo", "timestamp", "file", "row")  # _PART_SCHEMA's, tokens aside


def _part_columns(enc, splits: np.ndarray, buckets: np.ndarray, file_of_row: np.ndarray, row_in_file: np.ndarray) -> dict:
    """The accepted rows of one encoded batch, with what grouping and splitting need, as numpy arrays:
    ``_PART_COLUMNS``, ``bucket``, the flat ``tokens`` and each row's ``start`` in them."""
    return {
        "split": splits,
        "family": enc.ip_version,
        "src_hi": np.ascontiguousarray(enc.src_words[:, 0]),
        "src_lo": np.ascontiguousarray(enc.src_words[:, 1]),
        "timestamp": enc.timestamp,
        "file": file_of_row[enc.accepted],
        "row": row_in_file[enc.accepted],
        "bucket": buckets,
        "tokens": enc.tokens,
        "start": enc.offsets[:-1],
    }


def _bucket_batches(parts: Sequence[dict], lengths: tuple[int, int] | None = get_scheme("v1").item_lengths
                    ) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Buffered part columns -> one ``(bucket, batch)`` per bucket, rows in buffered order within each
    family and the IPv4 rows first, so the packer can take each family's fixed-length tokens as one
    matrix without indexing tokens. Tokens are gathered as fixed-width rows (numpy), not by Arrow's take.
    ``lengths``: the scheme's token lengths of an IPv4 and an IPv6 row (``Scheme.item_lengths``); None for
    a scheme whose rows have any lengths (v2's bodies), gathered by their offsets."""
    if lengths is None:
        yield from _variable_bucket_batches(parts)
        return
    ipv4_length, ipv6_length = lengths
    cols = {k: np.concatenate([p[k] for p in parts]) for k in (*_PART_COLUMNS, "bucket")}
    # Padded by one long row so that the run views below exist however few tokens there are.
    tokens = np.concatenate([*(p["tokens"] for p in parts), np.zeros(ipv6_length, np.uint16)])
    bases = np.cumsum([0] + [len(p["tokens"]) for p in parts[:-1]])
    start = np.concatenate([p["start"] + base for p, base in zip(parts, bases)])
    runs4 = spans(tokens, 2 * ipv4_length)[::2]  # runs4[t]: the ipv4_length tokens from token t
    runs6 = spans(tokens, 2 * ipv6_length)[::2]
    order = _bucket_family_order(cols["bucket"], cols["family"])
    sorted_buckets = cols["bucket"][order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(sorted_buckets)) + 1, [len(order)]])
    for lo, hi in itertools.pairwise(bounds):
        idx = order[lo:hi]
        family = cols["family"][idx]
        n4 = int(np.count_nonzero(family == 4))
        # Each row's tokens are one opaque value of the row's width (tokenizer.spans): a memcpy per row,
        # not an index per token.
        values = np.concatenate(
            [
                runs4[start[idx[:n4]]].view(np.uint16),
                runs6[start[idx[n4:]]].view(np.uint16),
            ]
        )
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        offsets[1 : n4 + 1] = ipv4_length
        offsets[n4 + 1 :] = ipv6_length
        np.cumsum(offsets, out=offsets)
        arrays = [pa.array(cols[k][idx]) for k in _PART_COLUMNS]
        arrays.append(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.uint16())))
        yield int(sorted_buckets[lo]), pa.record_batch(arrays, schema=_PART_SCHEMA)


def _variable_bucket_batches(parts: Sequence[dict]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """:func:`_bucket_batches` for rows of any token lengths: each row's tokens gathered by its offsets."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in (*_PART_COLUMNS, "bucket")}
    tokens = np.concatenate([p["tokens"] for p in parts])
    bases = np.cumsum([0] + [len(p["tokens"]) for p in parts[:-1]])
    start = np.concatenate([p["start"] + base for p, base in zip(parts, bases)])
    length = np.concatenate([np.diff(np.append(p["start"], len(p["tokens"]))) for p in parts])
    order = _bucket_family_order(cols["bucket"], cols["family"])
    sorted_buckets = cols["bucket"][order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(sorted_buckets)) + 1, [len(order)]])
    for lo, hi in itertools.pairwise(bounds):
        idx = order[lo:hi]
        lengths = length[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = tokens[np.repeat(start[idx] - offsets[:-1], lengths) + np.arange(offsets[-1])]
        arrays = [pa.array(cols[k][idx]) for k in _PART_COLUMNS]
        arrays.append(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.uint16())))
        yield int(sorted_buckets[lo]), pa.record_batch(arrays, schema=_PART_SCHEMA)


def _bucket_family_order(bucket: np.ndarray, family: np.ndarray) -> np.ndarray:
    """The stable order of rows by (bucket, family): ``np.lexsort((family, bucket))``, computed as one stable
    sort of a 16-bit key when the buckets allow (numpy sorts those by radix, in linear time)."""
    if len(bucket) and int(bucket.max()) < (1 << 14) and int(bucket.min()) >= 0:
        key = (bucket.astype(np.int16) << 1) | (family == 6).astype(np.int16)
        return np.argsort(key, kind="stable")
    return np.lexsort((family, bucket))


def _coalesced(task: ReadTask) -> Iterator[tuple[pa.RecordBatch, np.ndarray, np.ndarray, pa.Schema]]:
    """A task's rows in batches of about :data:`BATCH_ROWS` however small its row groups or files:
    ``(batch, input file index of each row, row index within its file of each row, the files' schema as
    written)``; the address columns are dictionaries (:data:`ADDRESS_COLUMNS`).

    Batches of files of one schema are concatenated (inputs of different schemas never share a batch), so
    the per-batch cost of encoding and bucketing is paid per ``BATCH_ROWS`` rows, not per row group.
    """
    pending: list[pa.RecordBatch] = []
    files: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    n = 0
    pending_schema = None

    def take():
        batch = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
        return batch, np.concatenate(files), np.concatenate(rows), pending_schema

    for piece, first_row, batch, schema in read_task(task, dictionary_columns=ADDRESS_COLUMNS):
        if pending and not schema.equals(pending_schema):
            yield take()
            pending, files, rows, n = [], [], [], 0
        pending_schema = schema
        pending.append(batch)
        files.append(np.full(batch.num_rows, piece.file_index, dtype=np.int32))
        rows.append(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64))
        n += batch.num_rows
        if n >= BATCH_ROWS:
            yield take()
            pending, files, rows, n = [], [], [], 0
    if pending:
        yield take()


def encode_task(task: ReadTask, ctx: JobContext) -> EncodeSummary:
    """Encode one task's rows; write accepted rows to bucket files and rejected rows to a scratch Parquet
    file (gathered into ``OUT/rejected/`` by :func:`finalize`). Returns what it read and wrote."""
    with contextlib.ExitStack() as stack:
        local_dir = stack.enter_context(storage.local_tmpdir()) if storage.is_remote(ctx.tmp) else None
        return _encode_task(task, ctx, local_dir)


def _encode_task(task: ReadTask, ctx: JobContext, local_dir: str | None) -> EncodeSummary:
    writers = _BucketWriters(ctx, task.task_id, local_dir)
    buffered: list[dict] = []
    n_buffered = 0
    rejected_parts = []
    reasons: Counter = Counter()
    rows = accepted = 0

    scheme = ctx.scheme

    def flush():
        nonlocal buffered, n_buffered
        if buffered:
            for bucket, batch in _bucket_batches(buffered, scheme.item_lengths):
                writers.write(bucket, batch)
        buffered, n_buffered = [], 0

    paths = {p.file_index: p.path for p in task.pieces}
    try:
        for batch, file_of_row, row_in_file, schema in _coalesced(task):
            enc = scheme.encode_table(batch)
            rows += batch.num_rows
            accepted += len(enc.accepted)
            if len(enc.rejected):
                reasons.update(enc.reason_counts())
                rej = plain_batch(batch.take(pa.array(enc.rejected)), schema)  # as the input holds them
                rej = rej.append_column("reason", pa.array(enc.reasons.tolist(), pa.string()))
                rej_files = file_of_row[enc.rejected]
                rej = rej.append_column("source_file", pa.array([paths[int(i)] for i in rej_files], pa.string()))
                rej = rej.append_column("source_row", pa.array(row_in_file[enc.rejected], pa.int64()))
                rejected_parts.append(rej)
            if not len(enc.accepted):
                continue
            h = source_hash(enc.src_words, enc.ip_version)
            if ctx.split_by == "src":
                splits = split_by_source(h, ctx.fractions)
            else:
                splits = split_by_time(enc.timestamp, ctx.cut_points)
            buffered.append(_part_columns(enc, splits, bucket_of(h, ctx.num_buckets), file_of_row, row_in_file))
            n_buffered += len(enc.accepted)
            if n_buffered >= _FLUSH_ROWS:
                flush()
        flush()
    finally:
        writers.close()
    writers.publish()

    rejected_file = None
    if rejected_parts:
        rejected_file = os.path.join(ctx.tmp, REJECTED_DIR, f"{task.task_id}.parquet")
        storage.makedirs(os.path.dirname(rejected_file))
        with storage.local_copy_for_write(rejected_file, verify_sha256=False) as tmp:
            pq.write_table(pa.Table.from_batches(rejected_parts), tmp, compression="zstd")
    summary = EncodeSummary(
        task=task.task_id,
        file_index=task.file_index,
        rows=rows,
        accepted=accepted,
        rejected=dict(sorted(reasons.items())),
        buckets=dict(sorted(writers.paths.items())),
        rejected_file=rejected_file,
    )
    ctx.progress(f"encode-{task.task_id}", {"rows": rows})
    return summary


# --- stage 3 + 4 + 5: group one bucket by source in time order, pack per split --------------------


_META = ("split", "src_hi", "src_lo", "timestamp", "file", "row")


def _family_streams(paths: Iterable[str], lengths: tuple[int, int]) -> dict[int, tuple[dict, np.ndarray]]:
    """A bucket's rows per family: metadata columns and an (items, length) token matrix, in file order;
    ``lengths``: the scheme's token lengths of an IPv4 and an IPv6 row."""
    ipv4_length, ipv6_length = lengths
    meta: dict[int, list] = {4: [], 6: []}
    tokens: dict[int, list] = {4: [], 6: []}
    for path in sorted(paths, key=_task_order):
        # A scratch file in an object store is read whole (a bucket's part, at most a few hundred MB). A local
        # one is mapped: its columns are views of the page cache, copied once by the concatenation below
        # (reading it would first copy it into fresh buffers; the pack stage's CPU was about 20% less so).
        reader = pa.ipc.open_file(pa.py_buffer(storage.read_bytes(path)) if storage.is_remote(path) else pa.memory_map(path))
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            family = batch.column("family").to_numpy()
            n4 = int(np.count_nonzero(family == 4))
            if not np.all(family[:n4] == 4):
                raise RuntimeError(f"{path}: bucket file rows are not grouped by family")
            tok = batch.column("tokens")
            offsets = tok.offsets.to_numpy()
            values = tok.values.to_numpy()
            for fam, lo, hi, width in ((4, 0, n4, ipv4_length), (6, n4, len(family), ipv6_length)):
                if hi > lo:
                    meta[fam].append({k: batch.column(k).to_numpy()[lo:hi] for k in _META})
                    tokens[fam].append(values[offsets[lo] : offsets[hi]].reshape(-1, width))
    out = {}
    for fam, width in ((4, ipv4_length), (6, ipv6_length)):
        cols = {k: np.concatenate([m[k] for m in meta[fam]]) if meta[fam] else np.zeros(0, np.int64) for k in _META}
        out[fam] = (cols, np.concatenate(tokens[fam]) if tokens[fam] else np.zeros((0, width), np.uint16))
    return out


def _task_order(path: str) -> tuple[int, str]:
    """Sort key of a bucket's part files: by task index (``00007.arrow`` before ``100000.arrow``), so the
    parts concatenate in (file, row) order."""
    stem = os.path.basename(path).split(".")[0]
    return len(stem), stem


def _in_read_order(file: np.ndarray, row: np.ndarray) -> bool:
    """Whether the rows are in strictly increasing (input file, row) order."""
    if len(file) < 2:
        return True
    df, dr = np.diff(file), np.diff(row)
    return bool(np.all((df > 0) | ((df == 0) & (dr > 0))))


def _source_time_order(cols: dict, sel: np.ndarray) -> np.ndarray:
    """The order of the rows ``sel`` by (source, time, input file, row), as positions in ``sel``.

    (file, row) breaks ties so that the order never depends on the runner. The parts normally arrive in
    (file, row) order already (:func:`_in_read_order`); a stable sort by (source, time) then keeps it among
    ties, and for IPv4 sources with timestamps spanning less than 2**32 s, (source, time) packs into one
    64-bit key: one stable sort instead of five.
    """
    hi, lo, ts, file, row = (cols[k][sel] for k in ("src_hi", "src_lo", "timestamp", "file", "row"))
    if not _in_read_order(file, row):
        return np.lexsort((row, file, ts, lo, hi))
    if len(sel) and not hi.any() and int(lo.max()) < (1 << 32):
        t0 = int(ts.min())
        if int(ts.max()) - t0 < (1 << 32):
            key = (lo.astype(np.uint64) << np.uint64(32)) | (ts - t0).astype(np.uint64)
            return np.argsort(key, kind="stable")
    return np.lexsort((ts, lo, hi))


def _sorted_stream(cols: dict, matrix: np.ndarray, split: int, first_source: int) -> tuple[np.ndarray, np.ndarray]:
    """One family's items of one split in (source, time) order, with source ids from ``first_source``."""
    sel = np.flatnonzero(cols["split"] == split)
    order = sel[_source_time_order(cols, sel)]
    hi, lo = cols["src_hi"][order], cols["src_lo"][order]
    new_source = np.concatenate([[True], (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])]) if len(order) else np.zeros(0, bool)
    return matrix[order], first_source + np.cumsum(new_source) - 1


def _item_stream(paths: Iterable[str]) -> tuple[dict, np.ndarray, np.ndarray]:
    """A bucket's rows of any token lengths: metadata columns (``_META`` and ``family``), the tokens
    concatenated and each row's offsets, in file order."""
    meta: list[dict] = []
    values: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for path in sorted(paths, key=_task_order):
        reader = pa.ipc.open_file(pa.py_buffer(storage.read_bytes(path)) if storage.is_remote(path) else pa.memory_map(path))
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            meta.append({k: batch.column(k).to_numpy() for k in (*_META, "family")})
            tok = batch.column("tokens")
            offsets = tok.offsets.to_numpy()
            values.append(tok.values.to_numpy()[offsets[0] : offsets[-1]])
            lengths.append(np.diff(offsets))
    cols = {k: np.concatenate([m[k] for m in meta]) if meta else np.zeros(0, np.int64) for k in (*_META, "family")}
    length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.zeros(len(length) + 1, np.int64)
    np.cumsum(length, out=offsets[1:])
    return cols, np.concatenate(values) if values else np.zeros(0, np.uint16), offsets


def _pack_runs(cols: dict, values: np.ndarray, offsets: np.ndarray, split: int, ctx: JobContext) -> PackResult | None:
    """One split's rows of a scheme with items of any lengths (v2): sources in time order, laid greedily
    into records by :func:`~beam_pipelines.pretokenize.packing.plan_runs`, written by the scheme."""
    scheme = ctx.scheme
    sel = np.flatnonzero(cols["split"] == split)
    if not len(sel):
        return None
    order = sel[_source_time_order(cols, sel)]
    hi, lo = cols["src_hi"][order], cols["src_lo"][order]
    new = np.ones(len(order), bool)
    new[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    body_len = offsets[order + 1] - offsets[order]
    body_offsets = np.zeros(len(order) + 1, np.int64)
    np.cumsum(body_len, out=body_offsets[1:])
    body = values[np.repeat(offsets[order] - body_offsets[:-1], body_len) + np.arange(body_offsets[-1])]
    items = scheme.Items(body=body, offsets=body_offsets, source=np.cumsum(new) - 1, family=cols["family"][order],
                  src_words=np.stack([hi, lo], axis=1), timestamp=cols["timestamp"][order])
    _, start_len, cont_len = scheme.head_lengths(items)
    bounds = plan_runs(start_len + body_len, cont_len + body_len, ctx.seq_len)
    records = scheme.assemble(items, ctx.seq_len, bounds)
    pad = int(np.count_nonzero(records == scheme.pad_id))
    record_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    return PackResult(
        records=records,
        measurements=len(order),
        tokens=records.size - pad,
        pad_tokens=pad,
        sources=int(new.sum()),
        continuous=int(np.count_nonzero(~new[1:] & (record_of[1:] == record_of[:-1]))),
    )


def pack_bucket(bucket: int, paths: Iterable[str], ctx: JobContext) -> list[tuple[int, PackResult]]:
    """Read one bucket's parts, group by source in time order and pack each split's records."""
    if ctx.scheme.item_lengths is None:
        cols, values, offsets = _item_stream(paths)
        results = []
        for split in range(len(SPLIT_NAMES)):
            result = _pack_runs(cols, values, offsets, split, ctx)
            if result is not None:
                results.append((split, result))
        ctx.progress(f"pack-{bucket:05d}", {"bucket": bucket})
        return results
    streams = _family_streams(paths, ctx.scheme.item_lengths)
    results = []
    for split in range(len(SPLIT_NAMES)):
        short, short_src = _sorted_stream(*streams[4], split, 0)
        long, long_src = _sorted_stream(*streams[6], split, int(short_src[-1]) + 1 if len(short_src) else 0)
        if len(short) or len(long):
            results.append((split, pack_sorted(short, short_src, long, long_src, ctx.seq_len, ctx.scheme.pad_id)))
    ctx.progress(f"pack-{bucket:05d}", {"bucket": bucket})
    return results


# --- stage 6: write one bucket's records of one split ---------------------------------------------


def write_bucket_records(bucket: int, split: int, result: PackResult, ctx: JobContext) -> RecordsSummary:
    """Write packed records to a temporary ArrayRecord file (verified), returning its summary.

    With object-store scratch, ArrayRecord's writer (local files only) writes on this worker's temporary
    disk; the file is uploaded and what the store then holds is checked: size and sha256 (read back).
    """
    directory = os.path.join(ctx.tmp, "records", SPLIT_NAMES[split])
    path = os.path.join(directory, f"{bucket:05d}.array_record")
    if storage.is_remote(path):
        with storage.local_tmpdir() as local_dir:
            local = os.path.join(local_dir, os.path.basename(path))
            info = write_records(local, result.records, ctx.compression)  # records, bytes, sha256
            size, digest = storage.upload(local, path, verify_sha256=True)
            if (size, digest) != (info["bytes"], info["sha256"]):  # the local file changed under us: never
                raise OSError(f"{path}: uploaded {size} bytes ({digest}), wrote {info['bytes']} ({info['sha256']})")
    else:
        os.makedirs(directory, exist_ok=True)
        info = write_records(path, result.records, ctx.compression)  # records, bytes, sha256
    return RecordsSummary(
        bucket=bucket,
        split=SPLIT_NAMES[split],
        tmp_path=path,
        **info,
        measurements=result.measurements,
        tokens=result.tokens,
        pad_tokens=result.pad_tokens,
        sources=result.sources,
        continuous=result.continuous,
    )


# --- stage 7: finalize (rejected rows gathered, records renamed into place, manifest last) --------


def plan_rejected_files(
    parts: Sequence[tuple[str, int, pa.Schema]], rows_per_file: int = REJECTED_FILE_ROWS
) -> list[list[tuple[str, int, int]]]:
    """Cut the rejected rows of ``parts`` (scratch file, rows, schema; in task order) into output files.

    Each output file is a list of ``(scratch file, first row, rows)`` pieces. A file holds at most
    ``rows_per_file`` rows, and one schema (inputs of different schemas never share a file), so there are
    at most ``ceil(total / rows_per_file)`` files plus one per change of schema, however many row groups.
    """
    files: list[list[tuple[str, int, int]]] = []
    schema, room = None, 0
    for path, rows, part_schema in parts:
        if schema is None or not part_schema.equals(schema):
            schema, room = part_schema, 0
        start = 0
        while start < rows:
            if room == 0:
                files.append([])
                room = rows_per_file
            take = min(room, rows - start)
            files[-1].append((path, start, take))
            start, room = start + take, room - take
    return files


def file_stem(prefix: str, version: int, i: int, n: int) -> str:
    """The name of a dataset file without its suffix: ``{prefix}-{i:05d}-of-{n:05d}`` for version 1 (the
    names datasets had before versions existed) and ``{prefix}-v{version:05d}-{i:05d}-of-{n:05d}`` for a
    later version, so an append's files never collide with an earlier version's."""
    if version == 1:
        return f"{prefix}-{i:05d}-of-{n:05d}"
    return f"{prefix}-v{version:05d}-{i:05d}-of-{n:05d}"


def gather_rejected(
    encodes: Sequence[EncodeSummary], output: str, rows_per_file: int = REJECTED_FILE_ROWS, version: int = 1
) -> list[str]:
    """Concatenate the tasks' scratch files of rejected rows, in task order, into
    ``output/rejected/rejected-NNNNN-of-NNNNN.parquet`` (``rejected-vVVVVV-...`` for a version > 1, see
    :func:`file_stem`); returns the paths relative to ``output``."""
    scratch = [s.rejected_file for s in sorted(encodes, key=lambda s: s.task) if s.rejected_file]
    parts = []
    for path in scratch:
        with parquet_file(path) as pf:
            meta = pf.metadata
        parts.append((path, meta.num_rows, meta.schema.to_arrow_schema()))
    files = plan_rejected_files(parts, rows_per_file)
    if files:
        storage.makedirs(os.path.join(output, REJECTED_DIR))
    paths = []
    for i, pieces in enumerate(files):
        rel = f"{REJECTED_DIR}/{file_stem('rejected', version, i, len(files))}.parquet"
        table = pa.concat_tables(_read_parquet(path).slice(start, rows) for path, start, rows in pieces)
        with storage.local_copy_for_write(os.path.join(output, rel)) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        paths.append(rel)
    return paths


def _read_parquet(path: str) -> pa.Table:
    with parquet_file(path) as pf:
        return pf.read()


def _split_entry(parts: Sequence[RecordsSummary], name: str, output: str, version: int = 1) -> dict:
    """Rename one split's temporary (already verified) files into place; returns the split's manifest
    entry. In an object store a rename is a server-side copy and a delete; the copy's size is checked."""
    storage.makedirs(os.path.join(output, name))
    files = []
    for i, part in enumerate(parts):
        rel = f"{name}/{file_stem(name, version, i, len(parts))}.array_record"
        storage.move(part.tmp_path, os.path.join(output, rel))
        files.append({"path": rel, "records": part.records, "bytes": part.bytes, "sha256": part.sha256})
    measurements = sum(p.measurements for p in parts)
    return {
        "records": sum(p.records for p in parts),
        "measurements": measurements,
        "tokens": sum(p.tokens for p in parts),
        "pad_tokens": sum(p.pad_tokens for p in parts),
        "sources": sum(p.sources for p in parts),
        "context_continuity": (sum(p.continuous for p in parts) / measurements) if measurements else None,
        "files": files,
    }


def finalize(summaries: Sequence[EncodeSummary | RecordsSummary], ctx: JobContext) -> dict | None:
    """Gather the rejected rows, rename temporary files to their final names, write the manifest last,
    remove ``_tmp``.

    When no row could be encoded there is no dataset: the rejected rows are gathered into
    ``OUT/rejected/`` (so the reasons can be read), no split folder and no manifest are written, and
    ``OUT/_tmp/`` + :data:`NOTHING_ENCODED` records the counts for the launcher, which reports the
    failure (exit 1). Returns the manifest, or None in that case.
    """
    ctx.configure_storage()
    encodes = sorted((s for s in summaries if isinstance(s, EncodeSummary)), key=lambda s: s.task)
    if sum(s.accepted for s in encodes) == 0:
        rejected_paths = gather_rejected(encodes, ctx.output, version=ctx.version)
        by_reason: Counter = Counter()
        for s in encodes:
            by_reason.update(s.rejected)
        storage.write_json(
            os.path.join(ctx.tmp, NOTHING_ENCODED),
            {"read": sum(s.rows for s in encodes), "by_reason": dict(sorted(by_reason.items())), "files": rejected_paths},
        )
        return None
    records = sorted((s for s in summaries if isinstance(s, RecordsSummary)), key=lambda s: (s.split, s.bucket))
    previous = _previous_versions(ctx)  # before anything is renamed: an append onto a changed dataset stops here
    splits = {
        name: _split_entry([r for r in records if r.split == name and r.records > 0], name, ctx.output, ctx.version)
        for name in SPLIT_NAMES
    }
    rejected_paths = gather_rejected(encodes, ctx.output, version=ctx.version)
    by_reason: Counter = Counter()
    for s in encodes:
        by_reason.update(s.rejected)

    # This version's entry; the top-level keys are the totals over all versions (manifest.combine_versions).
    manifest = {
        "version": ctx.version,
        "created": ctx.created,
        "splits": splits,
        "rejected": {"total": sum(by_reason.values()), "by_reason": dict(sorted(by_reason.items())), "files": rejected_paths},
        "rows": {
            "read": sum(s.rows for s in encodes),
            "accepted": sum(s.accepted for s in encodes),
            "rejected": sum(by_reason.values()),
        },
        "inputs": [dict(i) for i in ctx.inputs],
        "options": ctx.options,
        "fingerprint": ctx.fingerprint,
    }
    if manifest["rows"]["read"] != sum(i["rows"] for i in ctx.inputs):
        raise RuntimeError(
            f"read {manifest['rows']['read']} rows but the inputs hold {sum(i['rows'] for i in ctx.inputs)}"
        )
    if manifest["rows"]["accepted"] != sum(s["measurements"] for s in splits.values()):
        raise RuntimeError("accepted rows and packed measurements disagree")
    written = 0
    for p in rejected_paths:
        with parquet_file(os.path.join(ctx.output, p)) as pf:
            written += pf.metadata.num_rows
    if written != manifest["rows"]["rejected"]:
        raise RuntimeError(f"the rejected files hold {written} rows but {manifest['rows']['rejected']} were rejected")
    base = previous or {
        "format_version": manifest_lib.FORMAT_VERSION,
        "tokenizer": manifest_lib.tokenizer_info(ctx.tokenizer),
        "seq_len": ctx.seq_len,
    }
    versions = manifest_lib.dataset_versions(previous) if previous else []
    manifest = manifest_lib.combine_versions(base, [*versions, manifest])
    storage.write_json(os.path.join(ctx.output, manifest_lib.MANIFEST_NAME), manifest)  # last: the proof
    storage.rmtree(ctx.tmp)
    return manifest


def _previous_versions(ctx: JobContext) -> dict | None:
    """An append's dataset as planned (None for version 1). Read again here, under the writer lock, and
    refused if it is not the version the job planned against (it never is, unless someone wrote to the
    dataset without the lock)."""
    if ctx.version == 1:
        return None
    previous = manifest_lib.read_manifest(ctx.output)
    if previous.get("version", 1) != ctx.version - 1 or previous["fingerprint"] != ctx.previous_fingerprint:
        raise RuntimeError(
            f"{ctx.output}: the dataset changed while this append ran (version {previous.get('version', 1)}, "
            f"fingerprint {previous['fingerprint'][:12]}; planned against version {ctx.version - 1}, "
            f"{(ctx.previous_fingerprint or '')[:12]})"
        )
    return previous
