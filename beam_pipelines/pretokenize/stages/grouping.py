"""Stages 3 to 5 (GroupBySource, PackRecords): one bucket's part files read back, its rows grouped by
source in time order and packed into each split's records (:func:`pack_bucket`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from beam_pipelines.common import storage
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from beam_pipelines.pretokenize.packing import PackResult, pack_sorted, plan_runs
from beam_pipelines.pretokenize.stages.context import JobContext

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
