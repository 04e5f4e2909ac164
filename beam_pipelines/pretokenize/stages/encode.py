"""Stages 1 and 2 (ReadAndEncode): one read task's rows read in batches, encoded by the tokenizer's
vectorized encoder, rejected rows kept aside in a scratch Parquet file, accepted rows hash-partitioned by
source into one bucket file per bucket (:func:`encode_task`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.common import storage
from beam_pipelines.common.parquet import BATCH_ROWS, ReadTask, plain_batch, read_task
from beam_pipelines.pretokenize.splitting import bucket_of, source_hash, split_by_source, split_by_time
from beam_pipelines.pretokenize.stages.context import REJECTED_DIR, EncodeSummary, JobContext
from tokenizer import get_scheme
from tokenizer.spans import spans

# Read as Arrow dictionaries straight from the Parquet dictionary pages: the encoder then parses each
# dictionary entry, and neither materializes nor hashes a string per row (reading and address lookup took
# about 0.2 us a row less on 2.5M generated rows, measured apart; the whole encode stage about 0.1 us less).
ADDRESS_COLUMNS = ("src_addr", "dst_addr")
_FLUSH_ROWS = 1 << 19  # buffered accepted rows per task before bucket files are appended to

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
    file (gathered into ``OUT/rejected/`` by :func:`~beam_pipelines.pretokenize.stages.write.finalize`). Returns what it read and wrote."""
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
