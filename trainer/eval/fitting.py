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
RTTs (:func:`order_statistics`).

Nothing per pair stays in memory (at the seed's scale, 100M rows, the train split has tens of millions of
distinct pairs, about one per two measurements, and keeping ~200 bytes for each ran out of memory):

* the pair baselines' statistics go to a :class:`PairStore`, one file per bucket sorted by (source,
  destination); scoring asks it for the pairs of one block of measurements at a time
  (:func:`block_tables`), reading the files through memory maps opened for that block only;
* the factorisation and Vivaldi are fitted on at most :data:`MODEL_PAIRS` pairs: all of them when there are
  fewer (the 2M-row benchmark dataset has 868,375), else a sample of pairs chosen by a hash of their address ids
  (deterministic, and the same pairs whatever the bucketing); each bucket's model pairs wait on disk until
  the sample is drawn.

What stays in memory is one bucket at a time, the per-address results (destination tables, the models) and
the model pairs. Up to :data:`MODEL_PAIRS` pairs the results are bit-identical to fitting on the whole
split in memory (``baselines.fit``, ``coordinates.fit_factorization``, ``coordinates.fit_vivaldi``), which
the tests check with many buckets.

Why the project's own buckets rather than DuckDB or Arrow's Acero (``benchmarks/eval_groupby_bench.py``, the
2M-row benchmark dataset's train split: 1.6M measurements, 878k pairs, 2-core machine shared with other jobs,
load average 7-9): the per-pair and per-destination statistics took 3.7-6.3 s in buckets on one thread
(exact), 1.7-2.0 s in DuckDB 2.0 on its own threads (``quantile_cont`` and ``arg_max``; 98.9% of the pair
medians bit-identical, the others not: another interpolation and summation order), and 93 s in
Acero, which has no exact per-group quantile (``tdigest``: 73.6% of the medians exact). The buckets keep
the results bit-identical to the in-memory fit with no new dependency; DuckDB would save a few seconds of
a 15 s evaluation at 2M rows.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import tempfile
import time

import numpy as np

from beam_pipelines.common.hashing import splitmix64_np
from trainer.eval import baselines as bl
from trainer.eval import columns
from trainer.eval import coordinates as co

BUCKET_ROWS = 1_000_000  # measurements per bucket, as pretokenize's --bucket_rows default
# Pairs the factorisation and Vivaldi are fitted on, at most: their memory and time grow with the pairs (at
# the seed's 100M rows, 79M train pairs, the fit on 2M took 79 s and the whole evaluation peaked at 3.6 GB).
# The 2M-row benchmark dataset has 0.87M pairs with an RTT > 0 (all used); the 4M-row one 2.26M in all.
MODEL_PAIRS = 2_000_000
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
    pairs: PairStore | None = None  # the pair baselines' statistics (``tables.pair`` is empty)
    train_pairs: int = 0  # distinct (source, destination) pairs of the train split
    model_pairs: int = 0  # the pairs the factorisation and Vivaldi were fitted on


_PAIR_STATS = np.dtype([("median", np.float64), ("p10", np.float64), ("p90", np.float64),
                        ("fail_share", np.float64), ("last_value", np.float64), ("answers", np.bool_),
                        ("last_failed", np.bool_)])


class PairStore:
    """The pair baselines' statistics of a fit, on disk: per bucket of destinations, the pairs' codes
    (``source id * ids + destination id``, address ids of :class:`~trainer.eval.columns.Addresses`) sorted,
    and a row of statistics (:data:`_PAIR_STATS`) per pair. The folder (under ``folder``, default the
    system's temporary one) is removed by :meth:`close` or when the store is collected."""

    def __init__(self, buckets: int, ids: int, folder: str | None = None):
        self.buckets, self.ids = buckets, max(ids, 1)
        self._dir = tempfile.TemporaryDirectory(prefix="ping-llm-pairs-", dir=folder)
        self._rows = np.zeros(buckets, np.int64)  # pairs per bucket (a bucket is written once)

    def _path(self, b: int, what: str) -> str:
        return os.path.join(self._dir.name, f"pairs-{b:05d}.{what}")

    def _map(self, b: int, what: str) -> np.ndarray:
        # Raw files of known dtype and length, mapped directly: np.load's header parsing cost more than the
        # lookups themselves (a block of measurements maps every bucket's two files).
        dtype = np.int64 if what == "codes" else _PAIR_STATS
        return np.memmap(self._path(b, what), dtype, mode="r", shape=(int(self._rows[b]),))

    def write(self, b: int, codes: np.ndarray, stats: np.ndarray) -> None:
        """Bucket ``b``'s pairs (``codes`` sorted) and their statistics."""
        if len(codes):  # an empty file cannot be memory-mapped; no rows means no pairs
            np.asarray(codes, np.int64).tofile(self._path(b, "codes"))
            np.asarray(stats, _PAIR_STATS).tofile(self._path(b, "stats"))
            self._rows[b] = len(codes)

    def lookup(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored pairs among ``codes`` (sorted, distinct) and their statistics, in code order. Each
        bucket's files are mapped for this call only, so what they bring into memory is let go after it."""
        codes = np.asarray(codes, np.int64)
        bucket = (codes % self.ids) % self.buckets  # the destination's bucket, as _Spill.write chose it
        order = np.argsort(bucket, kind="stable")  # the codes of each bucket together, still sorted
        bounds = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=self.buckets))])
        found, rows = [], []
        for b in np.flatnonzero((np.diff(bounds) > 0) & (self._rows > 0)).tolist():
            q = codes[order[bounds[b] : bounds[b + 1]]]
            keys = self._map(b, "codes")
            at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
            hit = np.asarray(keys[at]) == q
            found.append(q[hit])
            rows.append(np.array(self._map(b, "stats")[at[hit]]))
            del keys
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, _PAIR_STATS)
        found, rows = np.concatenate(found), np.concatenate(rows)
        order = np.argsort(found, kind="stable")
        return found[order], rows[order]

    def all_codes(self) -> np.ndarray:
        """Every stored pair's code, sorted (for tests and small data: the whole list in memory)."""
        parts = [np.array(self._map(b, "codes")) for b in range(self.buckets) if self._rows[b]]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def close(self) -> None:
        self._dir.cleanup()


def block_tables(fitted: Fitted, src, dst) -> bl.Baselines:
    """``fitted.tables`` with the pair table of the pairs among these measurements' (source, destination)
    ((n,) address ids each) filled in from the :class:`PairStore`: :func:`trainer.eval.baselines.predict`
    on it answers these measurements as it would with the whole pair table in memory."""
    t, store = fitted.tables, fitted.pairs
    if store is None:
        return t
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    ids = store.ids
    ok = (src >= 0) & (src < ids) & (dst >= 0) & (dst < ids)  # ids beyond the fit's are no train address
    codes, stats = store.lookup(np.unique(src[ok] * ids + dst[ok]))
    nd = max(len(t.dst.keys), 1)
    # Stored pairs are train pairs, so their ends are rows of the train source and destination keys; codes
    # sorted by (source id, destination id) stay sorted as (source row, destination row).
    key = np.searchsorted(t.src_keys, codes // ids) * nd + np.searchsorted(t.dst.keys, codes % ids)
    pair = bl._Table(key.astype(np.int64), stats["median"], stats["p10"], stats["p90"], stats["fail_share"],
                     stats["answers"])
    return dataclasses.replace(t, pair=pair, pair_last_value=stats["last_value"], pair_last_failed=stats["last_failed"])


def full_tables(fitted: Fitted) -> bl.Baselines:
    """``fitted.tables`` with every train pair in memory (what :func:`trainer.eval.baselines.fit` gives on
    the whole split): for tests and small data."""
    if fitted.pairs is None:
        return fitted.tables
    codes = fitted.pairs.all_codes()
    ids = fitted.pairs.ids
    return block_tables(fitted, codes // ids, codes % ids)


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
    dst: bl._Table  # the bucket's destinations (disjoint from other buckets')
    src_keys: np.ndarray  # its distinct sources
    pairs: int  # its distinct (source, destination) pairs (statistics in the PairStore)
    model_pairs: int  # its pairs with an RTT > 0 (the coordinate models' input, in a file)


_MODEL_FIELDS = ("pos_src", "pos_dst", "log_sum", "count", "median")


def _reduce_bucket(spill: _Spill, b: int, ids: int, store: PairStore) -> _BucketResult:
    """A bucket's destination table and sources; its pairs' statistics into ``store``; the coordinate models'
    pairs (per distinct (src, dst) pair with an RTT > 0: address ids, the sum of log(max(rtt, floor)) over
    its RTTs in file order, their number and median) into a file of the spill folder. ``ids`` bounds the
    address ids (pair code s * ids + d)."""
    src, dst, rtt, ts = (spill.read(b, name) for name, _ in _FIELDS)
    # The global table comes from all buckets' RTTs (order statistics), not from one bucket's.
    tables, pair_i, ranks = bl.fit_arrays(bl.Observations(src, dst, rtt, ts), global_table=False)
    local_nd = max(len(tables.dst.keys), 1)
    keys = tables.pair.keys
    codes = tables.src_keys[keys // local_nd] * ids + tables.dst.keys[keys % local_nd]  # sorted, as keys are
    stats = np.empty(len(keys), _PAIR_STATS)
    for name in ("median", "p10", "p90", "fail_share", "answers"):
        stats[name] = getattr(tables.pair, name)
    stats["last_value"], stats["last_failed"] = tables.pair_last_value, tables.pair_last_failed
    store.write(b, codes, stats)
    # The models' pairs are the pair rows with an RTT > 0, in the same (source, destination) order; their
    # sums and median reuse the fit's pair rows and RTT ranks (no second sort of the pairs).
    ok = rtt > 0
    pi, r = pair_i[ok], rtt[ok]
    count = np.bincount(pi, minlength=len(keys)).astype(np.float64)
    log_sum = np.bincount(pi, weights=np.log(np.maximum(r, co.MF_FLOOR_MS)), minlength=len(keys))
    (median,) = bl.group_quantiles(pi, r, len(keys), qs=(0.5,), ranks=ranks[ok])
    has = count > 0
    pairs = codes[has]
    np.savez(spill.path(b, "model.npz"), pos_src=pairs // ids, pos_dst=pairs % ids, log_sum=log_sum[has],
             count=count[has], median=median[has])
    return _BucketResult(tables.dst, tables.src_keys, len(keys), len(pairs))


def _model_pairs(spill: _Spill, buckets: int, total: int, limit: int) -> tuple[np.ndarray, ...]:
    """The coordinate models' pairs from the buckets' files: all of them when ``total`` <= ``limit``, else
    those whose hash of (source id, destination id) falls below ``limit / total`` of the range (about
    ``limit`` pairs). Returns the :data:`_MODEL_FIELDS` arrays."""
    keep_below = None if total <= limit else np.uint64(min(int(limit / total * 2.0**64), 2**64 - 1))
    parts = []
    for b in range(buckets):
        path = spill.path(b, "model.npz")
        with np.load(path) as z:
            cols = [z[name] for name in _MODEL_FIELDS]
        os.remove(path)
        if keep_below is not None:
            pick = splitmix64_np((cols[0] * np.int64(1 << 32) + cols[1]).astype(np.uint64)) < keep_below
            cols = [c[pick] for c in cols]
        parts.append(cols)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(_MODEL_FIELDS)))


def _merge_tables(parts: list[_BucketResult], global_: bl._Table) -> bl.Baselines:
    """One :class:`~trainer.eval.baselines.Baselines` from the buckets' destinations (disjoint) and sources;
    the pair table is left empty (the pairs are in the :class:`PairStore`)."""
    src_keys = np.unique(np.concatenate([p.src_keys for p in parts])) if parts else np.zeros(0, np.int64)
    dst_parts = [p.dst for p in parts]
    dst_keys = np.concatenate([t.keys for t in dst_parts]) if parts else np.zeros(0, np.int64)
    d_order = np.argsort(dst_keys, kind="stable")
    fields = ("median", "p10", "p90", "fail_share", "answers")
    dst = bl._Table(dst_keys[d_order], *(np.concatenate([getattr(t, f) for t in dst_parts])[d_order] for f in fields))
    no = np.zeros(0)
    pair = bl._Table(np.zeros(0, np.int64), no, no, no, no, np.zeros(0, bool))
    return bl.Baselines(global_=global_, dst=dst, pair=pair, src_keys=src_keys, pair_last_value=no,
                        pair_last_failed=np.zeros(0, bool))


def fit_split(dataset, split: str, addresses: columns.Addresses, *, mf_rank: int = co.MF_RANK,
              mf_reg: float = co.MF_REG, vivaldi_dims: int = co.VIVALDI_DIMS, seed: int = 0,
              bucket_rows: int = BUCKET_ROWS, block_records: int = 4096, spill_dir: str | None = None,
              pairs_dir: str | None = None, model_pairs: int = MODEL_PAIRS, timings: dict | None = None) -> Fitted:
    """Fit every train baseline on ``split`` (see the module docstring); bucket files go to a temporary
    folder under ``spill_dir`` (default: the system's) and are removed when done; the :class:`PairStore` goes
    under ``pairs_dir`` (default: ``spill_dir``) and lives as long as the result's ``pairs``. At most
    ``model_pairs`` pairs fit the coordinate models (:func:`_model_pairs`). ``timings`` (a dict)
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
        ids = max(len(addresses), 1)  # every train address id is below this
        store = PairStore(buckets, ids, pairs_dir if pairs_dir is not None else spill_dir)
        # Buckets are independent: two at a time (their numpy sorts release the GIL), results in bucket order.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(lambda b: _reduce_bucket(spill, b, ids, store), range(buckets)))

        def successes():
            for b in range(buckets):
                r = spill.read(b, "rtt")
                yield r[r >= 0]

        failures = sum(int(np.sum(~(spill.read(b, "rtt") >= 0))) for b in range(buckets))
        n = int(spill.rows.sum())
        global_ = _global_table(successes, n - failures, n, failures)
        tables = _merge_tables(parts, global_)
        train_pairs = sum(p.pairs for p in parts)
        pos_total = sum(p.model_pairs for p in parts)
        del parts
        timings["fit_reduce_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # The coordinate models' pairs (RTT > 0), in the order the in-memory fits give them.
        pos_src, pos_dst, log_sum, count, median = _model_pairs(spill, buckets, pos_total, model_pairs)
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
    return Fitted(tables, factorization, vivaldi, n, len(tables.src_keys), buckets, store, train_pairs, len(pos_src))
