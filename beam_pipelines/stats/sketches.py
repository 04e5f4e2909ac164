"""Mergeable summaries behind the stats reports: exact while small, bounded and honest past that.

Every summary here is built from whole numpy/Arrow arrays (one Arrow batch at a time, never a row at a
time), merges with another of its kind in any order, and reports how exact its answers are:

- :class:`QuantileTable`: a sorted table of (value, count) pairs; exact quantiles while it holds at
  most ``limit`` distinct values, then log-linear bins (the float's exponent and top mantissa bits)
  that keep their exact count, minimum and maximum, so each quantile comes with its rank error bound.
- :class:`KeyCounter`: exact counts per distinct key (so exact distinct counts and top-k lists) while
  it holds at most ``limit`` keys, then a HyperLogLog for the distinct count and a Misra-Gries
  summary for the top-k, each with its error bound.
- :class:`HyperLogLog`: the distinct-count sketch the key counter falls back to.

Pending parts are appended and compacted in bulk when they outgrow what is already compacted, so
adding a batch costs time in proportion to the batch, not to everything seen so far.
"""

from __future__ import annotations

import copy
import math
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.common.hashing import splitmix64_np

COMPACT_MIN = 1 << 16  # pending entries that trigger a compaction even when the compacted part is small

_U64 = np.uint64


# --- hashing (deterministic across processes, unlike Python's hash()) ---------------------------------


def hash_strings(values: pa.Array) -> np.ndarray:
    """64-bit hash of each (non-null) string: FNV-1a over its UTF-8 bytes, then splitmix64.

    Vectorized across strings: one numpy step per byte position, so the cost is rows x longest string.
    """
    values = values.cast(pa.large_binary())
    n = len(values)
    h = np.full(n, 0xCBF29CE484222325, dtype=_U64)
    if n == 0:
        return h
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[values.offset : values.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    prime = _U64(0x100000001B3)
    for j in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > j)
        h[live] = (h[live] ^ data[starts[live] + j].astype(_U64)) * prime
    return splitmix64_np(h)


def hash_keys(keys: pa.Array) -> np.ndarray:
    """64-bit hashes of an int64 or string key array (no nulls)."""
    if pa.types.is_integer(keys.type):
        # splitmix64 (beam_pipelines.common.hashing's): a bijective, well-mixing 64-bit hash of uint64 values.
        return splitmix64_np(keys.to_numpy(zero_copy_only=False).astype(np.int64).view(_U64))
    return hash_strings(keys)


def _leading_zeros64(x: np.ndarray) -> np.ndarray:
    """Count of leading zero bits of each uint64 (64 for zero), by binary search over shifts."""
    x = x.copy()
    n = np.zeros(len(x), dtype=np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        top_clear = x < (_U64(1) << _U64(64 - s))
        n[top_clear] += s
        x[top_clear] <<= _U64(s)
    n[x == 0] = 64
    return n


# --- HyperLogLog ------------------------------------------------------------------------------------


class HyperLogLog:
    """HyperLogLog distinct-count sketch (Flajolet et al. 2007) over 64-bit hashes.

    ``2**precision`` one-byte registers; merging is an element-wise maximum, so any merge order gives
    the same registers. Adding a hash twice changes nothing. Relative standard error
    ``1.04 / sqrt(2**precision)`` (0.81% at the default precision 14) at every size, with Ertl's
    estimator (no small-range or mid-range bias to correct).
    """

    def __init__(self, precision: int = 14):
        self.precision = precision
        self.registers = np.zeros(1 << precision, dtype=np.uint8)

    @property
    def relative_standard_error(self) -> float:
        return 1.04 / math.sqrt(len(self.registers))

    def add_hashes(self, hashes: np.ndarray) -> None:
        hashes = np.asarray(hashes, dtype=_U64)
        if not len(hashes):
            return
        p = self.precision
        index = (hashes >> _U64(64 - p)).astype(np.intp)
        rest = hashes << _U64(p)  # the remaining 64 - p bits, at the top
        rank = np.minimum(_leading_zeros64(rest) + 1, 64 - p + 1).astype(np.uint8)
        np.maximum.at(self.registers, index, rank)

    def merge(self, other: HyperLogLog) -> None:
        if other.precision != self.precision:
            raise ValueError("cannot merge HyperLogLog sketches of different precision")
        np.maximum(self.registers, other.registers, out=self.registers)

    def estimate(self) -> int:
        """Ertl's improved estimator (arXiv:1702.01284, algorithm 6): unbiased over the whole range,
        from very small to very large counts, without the empirical bias tables of HyperLogLog++."""
        m = len(self.registers)
        q = 64 - self.precision
        hist = np.bincount(self.registers, minlength=q + 2).astype(np.float64)  # registers per value 0..q+1
        z = m * _tau(1 - hist[q + 1] / m)
        for k in range(q, 0, -1):
            z = 0.5 * (z + hist[k])
        z += m * _sigma(hist[0] / m)
        return round(m * m / (2 * math.log(2)) / z) if z else 0


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if z == previous:
            return z / 3


class _Compacting:
    """Base of the summaries that buffer added batches and fold them in on ``compact()``.

    Merging and pickling read a summary without changing it, because the same summary can be read by
    two threads at once: a Dask worker pickles a result for another worker on one thread while a task
    that takes the same result runs on another (a fold in place there lost counts, intermittently).
    """

    def compacted(self) -> Self:
        """This summary with its pending parts folded in, as a new object: ``self`` is not changed."""
        # A new object sharing the attributes (``copy.copy`` would pickle it: __getstate__); compact()
        # replaces the arrays and the pending list, never mutates them, except what _unshare() copies.
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out._unshare()
        out.compact()
        return out

    def _unshare(self) -> None:
        """In a fresh :meth:`compacted` object, copy what ``compact()`` changes in place (a subclass's
        part; the arrays and lists it only replaces stay shared)."""

    def __getstate__(self):
        return dict(self.compacted().__dict__)

    def __setstate__(self, state):
        self.__dict__.update(state)


# --- quantiles --------------------------------------------------------------------------------------


class QuantileTable(_Compacting):
    """Mergeable distribution of non-negative finite float64 values with exact counts.

    Values are keyed by their IEEE-754 bit pattern shifted right by ``shift`` bits; for non-negative
    floats the bit pattern orders like the value, so keys are sorted bins. ``shift == 0`` keys every
    distinct value: the table is exact. When it would hold more than ``limit`` keys, ``shift`` grows
    (dropping low mantissa bits) until at most ``limit // 2`` bins remain: each bin then spans a
    relative width of at most ``2**(shift - 52)`` and keeps its exact count, minimum and maximum.
    Exactness and the final bins depend only on the data, not on batching or merge order.

    Quantile method (nearest rank): ``p``-th percentile = the smallest value with at least ``p``% of
    the values at or below it, i.e. the value of rank ``ceil(p * n / 100)`` in sorted order. A bin's
    values all lie within its [min, max] and bins do not overlap, so any value reported from inside the
    bin holding that rank has a rank within the bin's count of the true one: the rank error is at most
    ``(count - 1) / n`` of that bin, and zero when the table is exact or the bin holds one value.
    """

    def __init__(self, limit: int = 1 << 18):
        if limit < 2:
            raise ValueError("limit must be at least 2")
        self.limit = limit
        self.shift = 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.lo = np.zeros(0, dtype=np.float64)  # smallest value in each bin
        self.hi = np.zeros(0, dtype=np.float64)  # largest value in each bin
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_bins = 0

    @property
    def exact(self) -> bool:
        return self.shift == 0

    @property
    def total(self) -> int:
        self.compact()
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        """Add finite, non-negative values (a whole batch at once)."""
        v = np.sort(np.asarray(values, dtype=np.float64) + 0.0)  # + 0.0 turns -0.0 into 0.0 (bit order)
        if not len(v):
            return
        keys = v.view(_U64) >> _U64(self.shift)
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(v)]
        self._push(np.diff(np.r_[starts, len(v)]).astype(np.int64), v[starts], v[ends - 1])

    def merge(self, other: QuantileTable) -> None:
        """Add ``other`` into this table; ``other`` is left as it was (see :meth:`compacted`)."""
        other = other.compacted()
        if other.shift > self.shift:
            # A coarser table's bins cannot be split: coarsen this one to match, then fold them in.
            self.shift = other.shift
            self._push(other.counts, other.lo, other.hi)
            self.compact(force=True)
        else:
            self._push(other.counts, other.lo, other.hi)

    def _push(self, counts, lo, hi) -> None:
        if len(counts):
            self._pending.append((counts, lo, hi))
            self._pending_bins += len(counts)
        if self._pending_bins >= max(len(self.counts), COMPACT_MIN):
            self.compact()

    def compact(self, force: bool = False) -> None:
        """Fold pending parts into the sorted table (and coarsen it if it grew past ``limit``)."""
        if not self._pending and not force:
            return
        counts = np.concatenate([self.counts] + [p[0] for p in self._pending])
        lo = np.concatenate([self.lo] + [p[1] for p in self._pending])
        hi = np.concatenate([self.hi] + [p[2] for p in self._pending])
        self._pending, self._pending_bins = [], 0
        self.counts, self.lo, self.hi = self._regroup(counts, lo, hi, self.shift)
        if len(self.counts) > self.limit or self.shift:
            # Once binned, always the finest bins that leave at most half the limit: that shift depends
            # only on the data (never on how batches were grouped and merged, as a part holds no more
            # bins than the whole), so the report is deterministic; the spare half saves re-coarsening.
            while len(self.counts) > self.limit // 2:
                self.shift += 1
                self.counts, self.lo, self.hi = self._regroup(self.counts, self.lo, self.hi, self.shift)

    @staticmethod
    def _regroup(counts, lo, hi, shift):
        keys = lo.view(_U64) >> _U64(shift)  # a bin's min and max share the key, so min decides
        order = np.argsort(keys, kind="stable")
        keys, counts, lo, hi = keys[order], counts[order], lo[order], hi[order]
        if not len(keys):
            return counts, lo, hi
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        return np.add.reduceat(counts, starts), np.minimum.reduceat(lo, starts), np.maximum.reduceat(hi, starts)

    def quantile(self, percent: float) -> tuple[float, float]:
        """(nearest-rank ``percent``-th percentile, bound on its rank error as a fraction of the values)."""
        values, bounds = self.quantiles([percent])
        return values[0], bounds[0]

    def quantiles(self, percents) -> tuple[list[float], list[float]]:
        """:meth:`quantile` for several percents at once (one pass over the table)."""
        self.compact()
        n = int(self.counts.sum())
        if n == 0:
            return [math.nan] * len(percents), [0.0] * len(percents)
        cum = np.cumsum(self.counts)
        values, bounds = [], []
        for percent in percents:
            rank = nearest_rank(percent, n)
            i = int(np.searchsorted(cum, rank))  # first bin whose cumulative count reaches the rank
            lo, hi, c = float(self.lo[i]), float(self.hi[i]), int(self.counts[i])
            if lo == hi:
                values.append(lo)
                bounds.append(0.0)
                continue
            before = int(cum[i]) - c
            # Interpolate by rank inside the bin: any point of [lo, hi] keeps the bound, this one is likeliest.
            value = lo + (hi - lo) * (rank - before - 0.5) / c
            values.append(float(min(max(value, lo), hi)))
            bounds.append((c - 1) / n)
        return values, bounds

    def min(self) -> float:
        self.compact()
        return float(self.lo[0]) if len(self.lo) else math.nan

    def max(self) -> float:
        self.compact()
        return float(self.hi[-1]) if len(self.hi) else math.nan

    @property
    def relative_bin_width(self) -> float:
        """Upper bound on (max - min) / min within one bin; 0 while exact."""
        return 0.0 if self.shift == 0 else 2.0 ** (self.shift - 52)

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Counts per [edges[i], edges[i+1]) (values below the first edge go to the first bin, at or
        above the last edge to the last); bins are placed by their minimum, which is exact while the
        table is exact and off by at most one bin width (see :attr:`relative_bin_width`) otherwise."""
        self.compact()
        idx = np.clip(np.searchsorted(edges, self.lo, side="right") - 1, 0, len(edges) - 2)
        return np.bincount(idx, weights=self.counts, minlength=len(edges) - 1).astype(np.int64)

    def copy(self) -> QuantileTable:
        self.compact()
        out = QuantileTable(self.limit)
        out.shift, out.counts, out.lo, out.hi = self.shift, self.counts.copy(), self.lo.copy(), self.hi.copy()
        return out


def nearest_rank(percent: float, n: int) -> int:
    """1-based rank of the nearest-rank ``percent``-th percentile of ``n`` values (exact for integer percents)."""
    if float(percent).is_integer():
        return max(1, -(-int(percent) * n // 100))
    return max(1, math.ceil(percent * n / 100))


# --- distinct keys and heavy hitters -----------------------------------------------------------------


def _group_sum(keys: pa.Array, counts: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    if len(keys) == 0:
        return keys, counts
    grouped = pa.table({"k": keys, "c": pa.array(counts, pa.int64())}).group_by("k").aggregate([("c", "sum")])
    return grouped.column("k").combine_chunks(), grouped.column("c_sum").to_numpy().astype(np.int64)


class KeyCounter(_Compacting):
    """Rows per distinct key of one column (int64 or string keys, nulls not counted).

    Exact while it holds at most ``limit`` distinct keys: distinct count, every count and the top-k
    are exact. Past that it keeps a :class:`HyperLogLog` of every key seen (the distinct count, with
    its error bound) and trims the counts Misra-Gries style to ``limit`` keys: each trim subtracts the
    (limit+1)-th largest count from all counts, so a reported count is low by at most
    :attr:`count_error` (the sum of what trims took away, at most rows / (limit + 1)) and no key
    missing from the table has more rows than that.
    """

    def __init__(self, kind: str, limit: int = 1 << 20, precision: int = 14):
        if kind not in ("int", "str"):
            raise ValueError("kind is 'int' or 'str'")
        self.kind = kind
        self.limit = limit
        self.precision = precision
        self.type = pa.int64() if kind == "int" else pa.large_string()
        self.keys = pa.array([], self.type)
        self.counts = np.zeros(0, dtype=np.int64)
        self.total = 0  # non-null values counted
        self.hll: HyperLogLog | None = None
        self.count_error = 0
        self._pending: list[tuple[pa.Array, np.ndarray]] = []
        self._pending_keys = 0

    @property
    def exact(self) -> bool:
        return self.hll is None

    def normalize(self, values: pa.Array) -> pa.Array:
        """Non-null values of a column as this counter's key type."""
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if pa.types.is_null(values.type):
            return pa.array([], self.type)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        values = values.drop_null()
        if self.kind == "int" and pa.types.is_uint64(values.type):
            # Reinterpreting uint64 as int64 is a bijection, so distinct counts stay exact; only ids
            # above 2**63 - 1 (which the tokenizer rejects anyway) would print as negative numbers.
            return pa.array(values.to_numpy(zero_copy_only=False).view(np.int64))
        return values.cast(self.type)

    def add(self, values: pa.Array) -> None:
        """Count the non-null values of a whole column chunk."""
        values = self.normalize(values)
        if not len(values):
            return
        vc = pc.value_counts(values)
        self.total += len(values)
        self._push(vc.field("values"), vc.field("counts").to_numpy().astype(np.int64))

    def merge(self, other: KeyCounter) -> None:
        """Add ``other`` into this counter; ``other`` is left as it was (see :meth:`compacted`)."""
        other = other.compacted()
        self.total += other.total
        self.count_error += other.count_error
        if other.hll is not None:
            if self.hll is None:
                self.compact()  # may itself pass the limit and start the sketch
            if self.hll is None:
                self._start_sketch()
            self.hll.merge(other.hll)
        self._push(other.keys, other.counts)

    def _start_sketch(self) -> None:
        # Called while still exact: the table holds every key seen so far.
        self.hll = HyperLogLog(self.precision)
        self.hll.add_hashes(hash_keys(self.keys))

    def _push(self, keys: pa.Array, counts: np.ndarray) -> None:
        if len(keys):
            self._pending.append((keys, counts))
            self._pending_keys += len(keys)
        if self._pending_keys >= max(len(self.keys), COMPACT_MIN):
            self.compact()

    def compact(self) -> None:
        """Fold pending counts into the table (then trim it if it grew past ``limit``)."""
        if not self._pending:
            return
        new_keys = pa.concat_arrays([k.cast(self.type) for k, _ in self._pending])
        new_counts = np.concatenate([c for _, c in self._pending])
        self._pending, self._pending_keys = [], 0
        if self.hll is not None:
            # Keys already sketched may come again: re-adding a hash changes nothing.
            self.hll.add_hashes(hash_keys(pc.unique(new_keys)))
        self.keys, self.counts = _group_sum(
            pa.concat_arrays([self.keys, new_keys]), np.concatenate([self.counts, new_counts])
        )
        if len(self.keys) > self.limit:
            if self.hll is None:
                self._start_sketch()
            threshold = int(
                np.partition(self.counts, len(self.counts) - self.limit - 1)[len(self.counts) - self.limit - 1]
            )
            keep = self.counts > threshold
            self.keys = self.keys.filter(pa.array(keep))
            self.counts = self.counts[keep] - threshold
            self.count_error += threshold

    def distinct(self) -> int:
        self.compact()
        return len(self.keys) if self.hll is None else self.hll.estimate()

    @property
    def distinct_error_bound(self) -> float:
        """Relative error bound printed with an approximate distinct count: 3 standard errors (99.7%)."""
        return 0.0 if self.hll is None else 3 * self.hll.relative_standard_error

    def top(self, k: int) -> list[tuple[object, int]]:
        """The ``k`` keys with the most rows as ``(key, rows)``, most first, ties by key."""
        self.compact()
        if not len(self.keys) or k <= 0:
            return []
        table = pa.table({"k": self.keys, "c": pa.array(self.counts, pa.int64())})
        order = pc.sort_indices(table, sort_keys=[("c", "descending"), ("k", "ascending")])[:k]
        picked = table.take(order)
        return list(zip(picked.column("k").to_pylist(), picked.column("c").to_pylist()))

    def _unshare(self) -> None:
        if self.hll is not None:
            self.hll = copy.deepcopy(self.hll)  # compact() adds to a sketch's registers in place
