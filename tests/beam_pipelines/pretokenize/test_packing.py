"""Unit tests of the pure packing and splitting functions."""

from __future__ import annotations

import numpy as np
import pytest

from beam_pipelines.pretokenize.packing import best_pair, compositions, pack_sorted, plan_records
from beam_pipelines.pretokenize.splitting import (
    bucket_of,
    parse_fractions,
    source_hash,
    split_by_source,
    split_by_time,
    time_cut_points,
)
from tokenizer import PAD


def test_compositions_fill_without_overflow():
    for a, b in compositions(1024, 45, 69):
        assert 45 * a + 69 * b <= 1024
        assert a == 0 or 45 * (a + 1) + 69 * b > 1024  # the most short items that fit
    assert (12, 7) in compositions(1024, 45, 69)  # 1023 of 1024


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.42, 0.6, 0.95])
def test_best_pair_straddles_target(fraction):
    lo, hi = best_pair(1024, 45, 69, fraction)
    assert lo[1] / sum(lo) <= fraction <= hi[1] / sum(hi)


def _lp_floor(n_short, n_long, seq_len=1024, short=45, long=69):
    """Least padding share of any fractional mix of record layouts that holds exactly this family mix.

    Independent of the planner: every layout (a, b) that fits, every pair mixed in the right
    proportion, the best share taken.
    """
    layouts = [(a, b) for a in range(seq_len // short + 1) for b in range(seq_len // long + 1)
               if 0 < a * short + b * long <= seq_len]
    f = n_long / (n_short + n_long)
    best = 1.0
    for a1, b1 in layouts:
        for a2, b2 in layouts:
            # weights w1, w2 >= 0 with (w1*b1 + w2*b2) = f * (w1*(a1+b1) + w2*(a2+b2))
            g1, g2 = b1 - f * (a1 + b1), b2 - f * (a2 + b2)
            if g1 == 0:
                w1, w2 = 1.0, 0.0
            elif g1 * g2 < 0:
                w1, w2 = -g2, g1  # both positive up to sign
                w1, w2 = abs(w1), abs(w2)
            else:
                continue
            used = w1 * (a1 * short + b1 * long) + w2 * (a2 * short + b2 * long)
            best = min(best, 1 - used / (seq_len * (w1 + w2)))
    return best


@pytest.mark.parametrize(
    "n_short,n_long",
    [(10_000, 0), (0, 10_000), (5_800, 4_200), (9_000, 1_000), (1_000, 9_000), (9_990, 10), (10, 9_990)],
)
def test_plan_records_consumes_everything_near_the_floor(n_short, n_long):
    a, b = plan_records(n_short, n_long, 1024, 45, 69)
    assert a.sum() == n_short and b.sum() == n_long
    assert np.all(45 * a + 69 * b <= 1024)
    pad = (len(a) * 1024 - 45 * n_short - 69 * n_long) / (len(a) * 1024)
    floor = _lp_floor(n_short, n_long)
    assert pad <= floor + 0.005  # within 0.5 points of the whole-measurement floor
    if n_long == 0:
        assert floor == pytest.approx(34 / 1024)
    if n_short == 0:
        assert floor == pytest.approx(58 / 1024)


def test_seed_mix_pads_under_one_percent():
    a, b = plan_records(58_000, 42_000, 1024, 45, 69)
    assert (len(a) * 1024 - 45 * 58_000 - 69 * 42_000) / (len(a) * 1024) <= 0.01


def test_plan_records_rejects_too_short_records():
    with pytest.raises(ValueError, match="shorter than one measurement"):
        plan_records(1, 1, 60, 45, 69)


def _stream(sources, length, first_id, seed):
    """Items of one length with recognisable tokens: MeasurementStart, then random bytes."""
    rng = np.random.default_rng(seed)
    items = rng.integers(10, 266, size=(len(sources), length)).astype(np.uint16)
    items[:, 0] = 0
    return items, np.asarray(sources, dtype=np.int64)


def test_pack_sorted_places_every_item_whole_and_in_order():
    # 3 IPv4 sources with 30, 5, 40 items, 2 IPv6 sources with 25 and 8 items.
    short, short_src = _stream([0] * 30 + [1] * 5 + [2] * 40, 45, 0, seed=1)
    long, long_src = _stream([3] * 25 + [4] * 8, 69, 75, seed=2)
    result = pack_sorted(short, short_src, long, long_src, 1024)
    rec = result.records
    assert rec.dtype == np.uint16 and rec.shape[1] == 1024
    assert result.measurements == 108
    assert result.tokens == short.size + long.size and result.pad_tokens == rec.size - result.tokens
    assert result.sources == 5
    catalogue = {bytes(r): ("s", i) for i, r in enumerate(short)} | {bytes(r): ("l", i) for i, r in enumerate(long)}
    # Rebuild the item sequence from the records: whole items, PAD only as suffix.
    seen = []
    for r in rec:
        end = int(np.argmax(r == PAD)) if (r == PAD).any() else 1024
        assert np.all(r[end:] == PAD)
        pos = 0
        while pos < end:
            hit = catalogue.get(bytes(r[pos : pos + 45])) or catalogue.get(bytes(r[pos : pos + 69]))
            assert hit, "an item was cut or altered"
            seen.append(hit)
            pos += 45 if hit[0] == "s" else 69
    assert sorted(seen) == sorted(catalogue.values())  # every item exactly once
    # Within each stream (and so each source), items appear in their given (time) order.
    for kind in "sl":
        order = [i for k, i in seen if k == kind]
        assert order == sorted(order)


def test_pack_sorted_rejects_a_source_with_two_lengths():
    short, short_src = _stream([0], 45, 0, seed=1)
    long, long_src = _stream([0], 69, 1, seed=2)
    with pytest.raises(ValueError, match="two lengths"):
        pack_sorted(short, short_src, long, long_src, 1024)


def _plan_reference(n_short, n_long, seq_len, short, long):
    """The planner's rule written plainly, one record per iteration (what plan_records must give)."""
    f = n_long / (n_short + n_long) if n_short + n_long else 0.0
    lo, hi = best_pair(seq_len, short, long, f) if 0 < f < 1 else ((seq_len // short, 0), (0, seq_len // long))
    used_a = used_b = 0
    out = []
    while used_a < n_short or used_b < n_long:
        rem_a, rem_b = n_short - used_a, n_long - used_b
        if rem_a and rem_b:
            a, b = hi if used_b < f * (used_a + used_b) else lo
        else:
            a, b = (seq_len // short, 0) if rem_a else (0, seq_len // long)
        a = min(a, rem_a)
        b = min((seq_len - a * short) // long, rem_b)
        a = min((seq_len - b * long) // short, rem_a)
        out.append((a, b))
        used_a, used_b = used_a + a, used_b + b
    return out


@pytest.mark.parametrize("seq_len", [69, 100, 500, 1024, 2048])
def test_plan_records_equals_the_plain_rule(seq_len):
    rng = np.random.default_rng(seq_len)
    cases = [(0, 0), (1, 0), (0, 1), (1, 1), (5_800, 4_200), (3, 5_000), (5_000, 3)]
    cases += [tuple(int(x) for x in rng.integers(0, 3_000, 2)) for _ in range(40)]
    for n_short, n_long in cases:
        a, b = plan_records(n_short, n_long, seq_len, 45, 69)
        assert list(zip(a.tolist(), b.tolist())) == _plan_reference(n_short, n_long, seq_len, 45, 69), (n_short, n_long)


def _pack_reference(short_items, short_source, long_items, long_source, seq_len):
    """Records built one by one in Python from the plan: short items, long items, PAD."""
    a_counts, b_counts = plan_records(len(short_items), len(long_items), seq_len, 45, 69)
    records, i, j, continuous = [], 0, 0, 0
    for a, b in zip(a_counts.tolist(), b_counts.tolist()):
        row = [t for item in short_items[i : i + a] for t in item.tolist()]
        row += [t for item in long_items[j : j + b] for t in item.tolist()]
        continuous += sum(short_source[k] == short_source[k - 1] for k in range(i + 1, i + a))
        continuous += sum(long_source[k] == long_source[k - 1] for k in range(j + 1, j + b))
        records.append(row + [PAD] * (seq_len - len(row)))
        i, j = i + a, j + b
    sources = len(set(short_source.tolist())) + len(set(long_source.tolist()))
    return np.array(records, dtype=np.uint16).reshape(-1, seq_len), continuous, sources


@pytest.mark.parametrize("seed", range(6))
def test_pack_sorted_equals_a_record_by_record_build(seed):
    rng = np.random.default_rng(seed)
    n_short, n_long = (int(x) for x in rng.integers(0, 400, 2))
    if seed == 0:
        n_long = 0
    if seed == 1:
        n_short = 0
    # Ascending source ids as the job gives them, or (seed 5) ids in no order, as a caller might.
    short_src = np.sort(rng.integers(0, 30, n_short))
    long_src = np.sort(rng.integers(30, 60, n_long))
    if seed == 5:
        short_src, long_src = rng.permutation(short_src), rng.permutation(long_src)
    short, _ = _stream(short_src, 45, 0, seed)
    long, _ = _stream(long_src, 69, 0, seed + 100)
    seq_len = int(rng.choice([69, 300, 1024]))
    result = pack_sorted(short, short_src, long, long_src, seq_len)
    expected, continuous, sources = _pack_reference(short, short_src, long, long_src, seq_len)
    assert np.array_equal(result.records, expected)
    assert result.continuous == continuous and result.sources == sources
    assert result.pad_tokens == int(np.count_nonzero(expected == PAD))


def test_pack_sorted_rejects_shared_sources_in_no_order():
    short, short_src = _stream([5, 1, 9], 45, 0, seed=1)
    long, long_src = _stream([12, 9], 69, 0, seed=2)  # ranges meet and 9 is in both
    with pytest.raises(ValueError, match="two lengths"):
        pack_sorted(short, short_src, long, long_src, 1024)
    long, long_src = _stream([12, 4], 69, 0, seed=2)  # ranges meet, no shared value: fine
    assert pack_sorted(short, short_src, long, long_src, 1024).sources == 5


def test_parse_fractions():
    assert parse_fractions("80,10,10") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_fractions("8,1,1") == pytest.approx((0.8, 0.1, 0.1))
    for bad in ("80,10", "a,b,c", "0,50,50", "80,-10,30", "80,10,10,0"):
        with pytest.raises(ValueError, match="--split"):
            parse_fractions(bad)


def test_split_by_source_is_stable_and_proportional():
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2**63, size=(50_000, 2), dtype=np.uint64)
    version = np.full(50_000, 4, dtype=np.int8)
    h = source_hash(words, version)
    split = split_by_source(h, (0.8, 0.1, 0.1))
    assert np.array_equal(split, split_by_source(source_hash(words.copy(), version), (0.8, 0.1, 0.1)))
    shares = np.bincount(split, minlength=3) / len(split)
    assert shares == pytest.approx([0.8, 0.1, 0.1], abs=0.01)
    buckets = bucket_of(h, 7)
    assert buckets.min() >= 0 and buckets.max() < 7
    # Bucket and split are independent: each bucket holds about the same split shares.
    for b in range(7):
        assert np.mean(split[buckets == b] == 0) == pytest.approx(0.8, abs=0.03)


def test_time_cut_points_and_split_by_time():
    seconds = np.arange(1000, 2000)
    counts = np.ones(1000, dtype=np.int64)
    cuts = time_cut_points([(seconds[:500], counts[:500]), (seconds[500:], counts[500:])], (0.8, 0.1, 0.1))
    split = split_by_time(seconds, cuts)
    assert np.bincount(split, minlength=3).tolist() == [800, 100, 100]
    assert np.all(np.diff(split) >= 0)  # train earliest
