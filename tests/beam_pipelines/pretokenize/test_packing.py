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
