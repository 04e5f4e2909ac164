"""Fit every train baseline from a split read block by block, in memory bounded by a bucket.

The train split is never held as columns. One pass decodes it block by block
(:func:`trainer.eval.columns.iter_split`) and appends each measurement's (source, destination, RTT,
timestamp) (32 bytes) to one of ``B`` bucket files on disk, chosen by its destination, as pretokenize
hash-partitions rows into buckets by source (``B = ceil(measurements / bucket_rows)``, so a bucket holds
about ``bucket_rows`` measurements). A destination's measurements, and so every (source, destination)
pair's, are all in one bucket, so each bucket is reduced on its own, in file order, to what the baselines
need per destination and per pair:

* the table baselines (:func:`trainer.eval.baselines.fit` run on the bucket: the destination and pair
  medians, percentiles, failure shares and the pair's last value);
* the factorisation's per-pair mean log RTT and count, and Vivaldi's per-pair median RTT
  (:func:`trainer.eval.coordinates.fit_factorization_pairs`, :func:`~trainer.eval.coordinates.fit_vivaldi_pairs`).

The global median and percentiles are exact order statistics found by a radix select over the buckets'
RTTs (:func:`order_statistics`). What stays in memory is one bucket at a time plus the per-pair and
per-address results: about 200 bytes per distinct train pair and a few hundred per address, independent of
how often a pair was measured. The results are bit-identical to fitting on the whole split in memory
(``baselines.fit``, ``coordinates.fit_factorization``, ``coordinates.fit_vivaldi``), which the tests check.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import tempfile
import time

import numpy as np

from trainer.eval import baselines as bl
from trainer.eval import columns
from trainer.eval import coordinates as co

BUCKET_ROWS = 1_000_000  # measurements per bucket, as pretokenize's --bucket_rows default
_FIELDS = (("src", np.int64), ("dst", np.int64), ("rtt", np.float64), ("timestamp", np.int64))


@dataclasses.dataclass(frozen=True)
class Fitted:
    """Every train-fitted baseline (see :func:`fit_split`)."""

    tables: bl.Baselines
    factorization: co.Factorization
    vivaldi: co.Vivaldi
    train_measurements: int
    train_sources: int
    buckets: int = 1


def order_statistics(chunks, ranks) -> dict[int, float]:
    """The exact ``k``-th smallest (0-based) of non-negative float64 values, for each ``k`` in ``ranks``;
    ``chunks()`` yields the values in arrays (called once per pass).

    A radix select on the IEEE-754 bits, 16 bits per pass (four passes): non-negative doubles sort as
    their bit patterns read as unsigned integers. Each pass counts, for each wanted rank, the values that
    share its prefix so far, in 65,536 bins of the next 16 bits. Memory: the bins, never the values."""
    ranks = sorted({int(k) for k in ranks})
    prefix, rest = {k: 0 for k in ranks}, {k: k for k in ranks}
    for shift in (48, 32, 16, 0):
        hist = {k: np.zeros(1 << 16, np.int64) for k in ranks}
        for values in chunks():
            bits = (np.asarray(values, np.float64) + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
            for k in ranks:
                sel = bits if shift == 48 else bits[(bits >> np.uint64(shift + 16)) == np.uint64(prefix[k])]
                hist[k] += np.bincount(((sel >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.int64),
                                       minlength=1 << 16)
        for k in ranks:
            cum = np.cumsum(hist[k])
            b = int(np.searchsorted(cum, rest[k], side="right"))
            rest[k] -= int(cum[b - 1]) if b else 0
            prefix[k] = (prefix[k] << 16) | b
    return {k: float(np.array([prefix[k]], np.uint64).view(np.float64)[0]) for k in ranks}


def _global_table(chunks, successes: int, total: int, failures: int) -> bl._Table:
    """The global median table (one key) as :func:`trainer.eval.baselines._table` computes it, from
    order statistics of the successful RTTs (same interpolation as ``group_quantiles``)."""
    c = successes
    qs = (0.1, 0.5, 0.9)
    out = {q: np.full(1, np.nan) for q in qs}
    if c:
        need = {}
        for q in qs:
            if q == 0.5:
                need[q] = ((c - 1) // 2, c // 2)
            else:
                pos = q * (c - 1)
                f = math.floor(pos)
                need[q] = (f, min(f + 1, c - 1))
        v = order_statistics(chunks, [k for pair in need.values() for k in pair])
        for q in qs:
            a, b = np.array([v[need[q][0]]]), np.array([v[need[q][1]]])
            if q == 0.5:
                out[q] = (a + b) / 2
            else:
                pos = np.array([q * (c - 1)])
                out[q] = bl._lerp(a, b, pos - np.floor(pos))
    fail_share = np.array([float(failures)]) / np.maximum(np.array([total]), 1)
    return bl._Table(np.zeros(1, np.int64), out[0.5], out[0.1], out[0.9], fail_share, np.array([c > 0]))


@dataclasses.dataclass
class _Spill:
    """Bucket files of a split's measurements, partitioned by destination id."""

    folder: str
    buckets: int
    rows: np.ndarray = None  # (buckets,) measurements per bucket

    def path(self, b: int, name: str) -> str:
        return os.path.join(self.folder, f"bucket-{b:05d}.{name}")

    def write(self, cols: columns.Columns) -> None:
        bucket = cols.dst % self.buckets
        order = np.argsort(bucket, kind="stable")  # file order kept within a bucket
        counts = np.bincount(bucket, minlength=self.buckets)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for name, dtype in _FIELDS:
            data = np.asarray(getattr(cols, name), dtype)[order]
            for b in np.flatnonzero(counts):
                with open(self.path(b, name), "ab") as f:
                    data[bounds[b] : bounds[b + 1]].tofile(f)
        self.rows += counts

    def read(self, b: int, name: str) -> np.ndarray:
        dtype = dict(_FIELDS)[name]
        path = self.path(b, name)
        return np.fromfile(path, dtype) if os.path.exists(path) else np.zeros(0, dtype)


@dataclasses.dataclass(frozen=True)
class _BucketResult:
    tables: bl.Baselines  # the bucket's destinations and pairs (bucket-local rows)
    pos_src: np.ndarray  # per distinct (src, dst) pair with an RTT > 0: address ids
    pos_dst: np.ndarray
    log_sum: np.ndarray  # sum of log(max(rtt, floor)) over the pair's RTTs > 0, in file order
    count: np.ndarray  # those RTTs' number
    median: np.ndarray  # their median


def _reduce_bucket(spill: _Spill, b: int, ids: int) -> _BucketResult:
    """A bucket's tables and coordinate-model pairs; ``ids`` bounds the address ids (pair code s * ids + d)."""
    src, dst, rtt, ts = (spill.read(b, name) for name, _ in _FIELDS)
    tables = bl.fit(bl.Observations(src, dst, rtt, ts))
    ok = rtt > 0
    r = rtt[ok]
    pairs, pi = np.unique(src[ok] * ids + dst[ok], return_inverse=True)  # sorted by (src, dst)
    pi = pi.reshape(-1)
    count = np.bincount(pi, minlength=len(pairs)).astype(np.float64)
    log_sum = np.bincount(pi, weights=np.log(np.maximum(r, co.MF_FLOOR_MS)), minlength=len(pairs))
    (median,) = bl.group_quantiles(pi, r, len(pairs), qs=(0.5,))
    return _BucketResult(tables, pairs // ids, pairs % ids, log_sum, count, median)


def _merge_tables(parts: list[_BucketResult], global_: bl._Table) -> bl.Baselines:
    """One :class:`~trainer.eval.baselines.Baselines` from the buckets' (destinations and pairs disjoint)."""
    src_keys = np.unique(np.concatenate([p.tables.src_keys for p in parts])) if parts else np.zeros(0, np.int64)
    dst_parts = [p.tables.dst for p in parts]
    dst_keys = np.concatenate([t.keys for t in dst_parts]) if parts else np.zeros(0, np.int64)
    d_order = np.argsort(dst_keys, kind="stable")
    fields = ("median", "p10", "p90", "fail_share", "answers")

    def cat(tables, order, keys):
        return bl._Table(keys, *(np.concatenate([getattr(t, f) for t in tables])[order] for f in fields))

    dst = cat(dst_parts, d_order, dst_keys[d_order])
    nd = max(len(dst_keys), 1)
    codes, last_value, last_failed = [], [], []
    for p in parts:  # bucket-local pair code -> the global one (source row * destinations + destination row)
        t = p.tables
        local_nd = max(len(t.dst.keys), 1)
        s_id, d_id = t.src_keys[t.pair.keys // local_nd], t.dst.keys[t.pair.keys % local_nd]
        codes.append(np.searchsorted(src_keys, s_id) * nd + np.searchsorted(dst.keys, d_id))
        last_value.append(t.pair_last_value)
        last_failed.append(t.pair_last_failed)
    code = np.concatenate(codes) if parts else np.zeros(0, np.int64)
    p_order = np.argsort(code, kind="stable")
    pair = cat([p.tables.pair for p in parts], p_order, code[p_order].astype(np.int64))
    return bl.Baselines(
        global_=global_, dst=dst, pair=pair, src_keys=src_keys,
        pair_last_value=(np.concatenate(last_value) if parts else np.zeros(0))[p_order],
        pair_last_failed=(np.concatenate(last_failed) if parts else np.zeros(0, bool))[p_order],
    )


def fit_split(dataset, split: str, addresses: columns.Addresses, *, mf_rank: int = co.MF_RANK,
              mf_reg: float = co.MF_REG, vivaldi_dims: int = co.VIVALDI_DIMS, seed: int = 0,
              bucket_rows: int = BUCKET_ROWS, block_records: int = 4096, spill_dir: str | None = None,
              timings: dict | None = None) -> Fitted:
    """Fit every train baseline on ``split`` (see the module docstring); bucket files go to a temporary
    folder under ``spill_dir`` (default: the system's) and are removed when done. ``timings`` (a dict)
    receives the seconds of each phase: ``fit_read_s`` (decode and spill), ``fit_reduce_s`` (buckets and
    the global table), ``fit_models_s`` (the factorisation and Vivaldi)."""
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    total = int(dataset.manifest["splits"][split]["measurements"])
    buckets = max(1, -(-total // max(bucket_rows, 1)))
    with tempfile.TemporaryDirectory(prefix="ping-llm-eval-", dir=spill_dir) as folder:
        spill = _Spill(folder, buckets, np.zeros(buckets, np.int64))
        for _, cols in columns.iter_split(dataset, split, addresses, block_records=block_records):
            spill.write(cols)
        timings["fit_read_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # Buckets are independent: two at a time (their numpy sorts release the GIL), results in bucket order.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(lambda b: _reduce_bucket(spill, b, max(len(addresses), 1)), range(buckets)))

        def successes():
            for b in range(buckets):
                r = spill.read(b, "rtt")
                yield r[r >= 0]

        failures = sum(int(np.sum(~(spill.read(b, "rtt") >= 0))) for b in range(buckets))
        n = int(spill.rows.sum())
        global_ = _global_table(successes, n - failures, n, failures)
    tables = _merge_tables(parts, global_)
    timings["fit_reduce_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    # The coordinate models' pairs (RTT > 0), in the order the in-memory fits give them.
    pos_src = np.concatenate([p.pos_src for p in parts])
    pos_dst = np.concatenate([p.pos_dst for p in parts])
    log_sum = np.concatenate([p.log_sum for p in parts])
    count = np.concatenate([p.count for p in parts])
    median = np.concatenate([p.median for p in parts])
    del parts
    # Both models index pairs by rows of sorted address lists, so sorting by (source id, destination id)
    # gives the order the in-memory fits use.
    order = np.lexsort((pos_dst, pos_src))
    pos_src, pos_dst, log_sum, count, median = (a[order] for a in (pos_src, pos_dst, log_sum, count, median))
    src_keys, dst_keys = np.unique(pos_src), np.unique(pos_dst)
    keys = np.unique(np.concatenate([src_keys, dst_keys]))
    # Vivaldi (the longer fit) in a second thread while this one runs ALS: numpy releases the GIL, so the
    # two cores share them; no shared mutable state, each seeds its own generator (same results as in turn).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        vivaldi = pool.submit(co.fit_vivaldi_pairs, keys, np.searchsorted(keys, pos_src),
                              np.searchsorted(keys, pos_dst), median, np.searchsorted(keys, src_keys),
                              dims=vivaldi_dims, seed=seed)
        factorization = co.fit_factorization_pairs(
            src_keys, dst_keys, np.searchsorted(src_keys, pos_src), np.searchsorted(dst_keys, pos_dst),
            log_sum / np.maximum(count, 1), count, rank=mf_rank, reg=mf_reg, seed=seed)
        vivaldi = vivaldi.result()
    timings["fit_models_s"] = time.perf_counter() - t0
    return Fitted(tables, factorization, vivaldi, n, len(tables.src_keys), buckets)
