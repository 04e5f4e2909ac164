"""The mergeable summaries: exact while small, and within their stated bounds past that."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.common.hashing import splitmix64_np
from beam_pipelines.stats.sketches import (
    HyperLogLog,
    KeyCounter,
    QuantileTable,
    hash_keys,
    hash_strings,
    nearest_rank,
)

PERCENTS = (0, 1, 10, 25, 50, 75, 90, 99, 99.9, 100)


def _table(chunks, limit, parts=3):
    """Build tables from chunks round-robin, then merge them (as Beam would)."""
    tables = [QuantileTable(limit) for _ in range(parts)]
    for i, c in enumerate(chunks):
        tables[i % parts].add(c)
    out = tables[0]
    for t in tables[1:]:
        out.merge(pickle.loads(pickle.dumps(t)))
    return out


def _rank_error(sorted_values: np.ndarray, value: float, rank: int) -> float:
    """Distance (as a fraction of n) from ``rank`` to the ranks ``value`` holds in the data."""
    first = np.searchsorted(sorted_values, value, "left") + 1  # 1-based rank of the first copy (or next value)
    last = np.searchsorted(sorted_values, value, "right")  # rank of the last value <= value
    if first <= rank <= last:
        return 0.0
    return min(abs(rank - first), abs(rank - last)) / len(sorted_values)


def test_quantiles_exact_while_small():
    rng = np.random.default_rng(1)
    x = np.round(rng.lognormal(3.5, 1.0, 50_000), 3)
    q = _table(np.array_split(x, 17), limit=1 << 20)
    s = np.sort(x)
    assert q.exact and q.total == len(x)
    for p in PERCENTS:
        value, bound = q.quantile(p)
        assert value == s[nearest_rank(p, len(s)) - 1]
        assert bound == 0.0
        # numpy's inverted_cdf is the same nearest-rank definition
        assert value == pytest.approx(np.quantile(x, p / 100, method="inverted_cdf"), rel=0, abs=0) or p in (99.9,)
    assert (q.min(), q.max()) == (s[0], s[-1])


@pytest.mark.parametrize("limit", [64, 1000, 5000])
def test_quantiles_within_rank_bound_when_coarsened(limit):
    rng = np.random.default_rng(limit)
    # Heavy point masses (as RTTs rounded to a few values would have) plus a wide continuous tail.
    x = np.concatenate(
        [np.full(3000, 50.0), np.full(1000, 0.0), rng.lognormal(3, 1.5, 40_000), rng.uniform(0, 1e5, 500)]
    )
    rng.shuffle(x)
    q = _table(np.array_split(x, 23), limit=limit)
    s = np.sort(x)
    assert not q.exact and len(q.counts) <= limit
    assert q.total == len(x)
    for p in PERCENTS:
        value, bound = q.quantile(p)
        rank = nearest_rank(p, len(s))
        assert _rank_error(s, value, rank) <= bound + 1e-12
    assert (q.min(), q.max()) == (s[0], s[-1])


def test_rank_error_bound_small_on_rtt_like_data():
    # RTT-like data (3 decimals, five decades) in far fewer bins than the default limit still keeps
    # every quantile within the 0.5% rank error the report promises.
    rng = np.random.default_rng(8)
    x = np.round(rng.lognormal(4, 1.2, 200_000), 3)
    q = _table(np.array_split(x, 30), limit=4096)
    assert not q.exact
    s = np.sort(x)
    values, bounds = q.quantiles(PERCENTS)
    assert max(bounds) <= 0.005
    for p, v, b in zip(PERCENTS, values, bounds):
        assert _rank_error(s, v, nearest_rank(p, len(s))) <= b + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=300),
    st.integers(min_value=2, max_value=40),
    st.integers(min_value=1, max_value=5),
)
def test_quantile_bound_holds_for_any_data_and_merge_order(values, limit, parts):
    x = np.array(values, dtype=np.float64)
    q = _table(np.array_split(x, parts), limit=limit, parts=parts)
    s = np.sort(x + 0.0)
    for p in (0, 50, 90, 99, 100):
        value, bound = q.quantile(p)
        assert _rank_error(s, value, nearest_rank(p, len(s))) <= bound + 1e-12


def test_merge_order_does_not_matter_while_exact():
    rng = np.random.default_rng(3)
    chunks = [np.round(rng.exponential(20, 1000), 2) for _ in range(6)]
    a = _table(chunks, 1 << 20, parts=2)
    b = _table(chunks[::-1], 1 << 20, parts=4)
    assert np.array_equal(a.lo, b.lo) and np.array_equal(a.counts, b.counts)


def test_negative_zero_is_zero():
    q = QuantileTable()
    q.add(np.array([-0.0, 0.0, 1.0]))
    assert q.quantile(50) == (0.0, 0.0) and q.min() == 0.0 and len(q.counts) == 2


def test_histogram_counts_everything():
    rng = np.random.default_rng(4)
    x = rng.lognormal(3, 1, 10_000)
    q = QuantileTable()
    q.add(x)
    edges = np.array([0.0, 10, 100, 1000, 1e9])
    assert q.histogram(edges).tolist() == np.histogram(x, edges)[0].tolist()


def test_nearest_rank():
    assert [nearest_rank(p, 10) for p in (0, 10, 50, 90, 99, 100)] == [1, 1, 5, 9, 10, 10]
    assert nearest_rank(90, 1_000_000_000_000) == 900_000_000_000  # integer arithmetic, no float rounding


def test_key_hashes_are_pinned():
    # The reports' distinct counts and top-k depend on these exact values: they must never change.
    # (0xe220a8397b1dcdaf is splitmix64's well-known first output for state 0.)
    ints = hash_keys(pa.array([0, 1, -1, 2**62], pa.int64()))
    assert [hex(int(h)) for h in ints] == ["0xe220a8397b1dcdaf", "0x910a2dec89025cc1", "0xe4d971771b652c20", "0xaa50ea8e0fa9eb"]
    strings = hash_strings(pa.array(["", "a", "ping-llm"]))
    assert [hex(int(h)) for h in strings] == ["0xc3817c016ba4ff30", "0x5f29c2aadd9b8527", "0xc814ab0491e73cf7"]


def test_hll_within_bound_and_mergeable():
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 1 << 62, 300_000).astype(np.uint64)
    parts = [HyperLogLog() for _ in range(3)]
    for i, chunk in enumerate(np.array_split(keys, 9)):
        parts[i % 3].add_hashes(splitmix64_np(chunk))
        parts[i % 3].add_hashes(splitmix64_np(chunk))  # adding twice changes nothing
    for p in parts[1:]:
        parts[0].merge(p)
    true = len(np.unique(keys))
    assert abs(parts[0].estimate() - true) / true <= 3 * parts[0].relative_standard_error


def test_hash_strings_is_deterministic_and_spreads():
    values = pa.array(["", "a", "b", "192.0.2.1", "2001:db8::1", "a" * 70])
    h = hash_strings(values)
    assert h.tolist() == hash_strings(pa.array(values.to_pylist(), pa.large_string())).tolist()
    assert len(set(h.tolist())) == len(values)
    assert hash_strings(values.slice(3)).tolist() == h[3:].tolist()  # offsets of sliced arrays honoured


def test_key_counter_exact():
    rng = np.random.default_rng(6)
    words = [f"10.0.{i // 256}.{i % 256}" for i in rng.integers(0, 3000, 20_000)]
    ints = rng.integers(0, 500, 20_000)
    s, i = KeyCounter("str"), KeyCounter("int")
    for lo in range(0, 20_000, 1500):
        s.add(pa.array(words[lo : lo + 1500] + [None]))
        i.add(pa.array(ints[lo : lo + 1500]).cast(pa.uint32()))
    assert s.exact and s.distinct() == len(set(words)) and s.total == len(words)
    assert i.distinct() == len(set(ints.tolist()))
    expected = Counter(words)
    top = s.top(10)
    assert [c for _, c in top] == sorted(expected.values(), reverse=True)[:10]
    assert all(expected[k] == c for k, c in top)
    assert i.top(3) == sorted(Counter(ints.tolist()).items(), key=lambda kv: (-kv[1], kv[0]))[:3]


def test_key_counter_approximate_bounds():
    rng = np.random.default_rng(7)
    heavy = [f"heavy-{k}" for k in range(5)]
    values = [f"k{v}" for v in rng.integers(0, 200_000, 60_000)] + heavy * 2000
    rng.shuffle(values)
    parts = [KeyCounter("str", limit=1000) for _ in range(3)]
    for n, lo in enumerate(range(0, len(values), 4000)):
        parts[n % 3].add(pa.array(values[lo : lo + 4000]))
    c = parts[0]
    for p in parts[1:]:
        c.merge(pickle.loads(pickle.dumps(p)))
    true = Counter(values)
    assert not c.exact
    assert abs(c.distinct() - len(true)) / len(true) <= c.distinct_error_bound
    assert c.count_error <= len(values) / 1001 * 3  # each trim takes at most rows/(limit+1); merges add up
    top = dict(c.top(5))
    assert set(top) == set(heavy)
    for k, v in top.items():
        assert true[k] - c.count_error <= v <= true[k]


# --- merging and pickling only read the sketch they are given ------------------------------------------
# On Dask a result can be pickled for another worker on one thread while a task that takes it runs on
# another: a fold in place there lost counts now and then (the stats Dask test failed intermittently).


def _state(sketch) -> dict:
    """What a sketch holds, attribute by attribute, as identities and copies of its lists."""
    return {k: (id(v), list(v) if isinstance(v, list) else None) for k, v in vars(sketch).items()}


def _key_counter_with_pending(limit: int) -> KeyCounter:
    counter = KeyCounter("int", limit=limit)
    for lo in (0, 5, 10):  # several small parts stay pending (below the compaction size)
        counter.add(pa.array(np.arange(lo, lo + 8, dtype=np.int64)))
    assert counter._pending
    return counter


@pytest.mark.parametrize("limit", [1 << 20, 4])  # exact, and trimmed with a HyperLogLog
def test_key_counter_merge_and_pickle_leave_the_counter_as_it_was(limit):
    other = _key_counter_with_pending(limit)
    if limit == 4:
        other.compact()  # past the limit: it has a sketch now, and more pending parts after
        other.add(pa.array(np.arange(20, 28, dtype=np.int64)))
        assert other.hll is not None and other._pending
    before = _state(other)
    registers = None if other.hll is None else other.hll.registers.copy()
    into = KeyCounter("int", limit=limit)
    into.merge(other)
    restored = pickle.loads(pickle.dumps(other))
    assert _state(other) == before
    if registers is not None:
        assert np.array_equal(other.hll.registers, registers)
    expected = dict(other.top(100))  # compacts `other` itself now, after the checks
    assert dict(into.top(100)) == expected == dict(restored.top(100))
    assert into.total == other.total == restored.total


def test_quantile_table_merge_and_pickle_leave_the_table_as_it_was():
    other = QuantileTable(limit=64)
    for seed in range(3):
        other.add(np.random.default_rng(seed).random(20))
    assert other._pending
    before = _state(other)
    into = QuantileTable(limit=64)
    into.merge(other)
    restored = pickle.loads(pickle.dumps(other))
    assert _state(other) == before
    assert into.total == other.total == restored.total == 60
    assert np.array_equal(into.counts, restored.counts) and np.array_equal(into.lo, restored.lo)
