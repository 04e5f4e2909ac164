"""Baselines and metrics against an independent pure-Python computation on a small hand-made fixture."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from trainer.eval import baselines as bl

# (src, dst, rtt, timestamp): a tiny train split. "F" rows are failures.
TRAIN = [
    ("s1", "d1", 10.0, 100),
    ("s1", "d1", 14.0, 300),
    ("s1", "d1", 12.0, 200),
    ("s1", "d1", -1.0, 400),  # the pair's last measurement failed; its last *successful* RTT is 14.0 (t=300)
    ("s2", "d1", 40.0, 100),
    ("s2", "d1", 44.0, 100),  # same timestamp: the later row in file order wins
    ("s2", "d2", 100.0, 50),
    ("s3", "d2", 120.0, 60),
    ("s3", "d2", 130.0, 70),
    ("s4", "d3", -1.0, 10),  # a destination seen only failing: cannot answer, falls back to global
    ("s4", "d3", -1.0, 20),
]
# Evaluated measurements: (src, dst, true rtt).
EVAL = [
    ("s1", "d1", 13.0),  # pair known
    ("s2", "d1", 50.0),  # pair known
    ("s9", "d1", 20.0),  # unseen source: pair -> dst
    ("s9", "d2", 110.0),  # unseen source, known dst
    ("s9", "d9", 30.0),  # unseen pair and dst: -> global
    ("s4", "d3", -1.0),  # failed; dst has no successful RTT: -> global
]


def _obs(rows):
    return bl.Observations(
        np.array([r[0] for r in rows], dtype=object),
        np.array([r[1] for r in rows], dtype=object),
        np.array([r[2] for r in rows], np.float64),
        np.array([r[3] for r in rows], np.int64),
    )


def _quantile(values, q):
    """Linear interpolation between order statistics (numpy's default), written out."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _expected(name):
    """Independent computation: (value, low, high, fail_prob, level) per EVAL row."""
    ok = lambda rows: [r[2] for r in rows if r[2] >= 0]  # noqa: E731
    glob = ok(TRAIN)
    glob_answer = (statistics.median(glob), _quantile(glob, 0.1), _quantile(glob, 0.9),
                   sum(r[2] < 0 for r in TRAIN) / len(TRAIN))

    def by(rows):
        good = ok(rows)
        if not good:
            return None
        return (statistics.median(good), _quantile(good, 0.1), _quantile(good, 0.9),
                sum(r[2] < 0 for r in rows) / len(rows))

    out = []
    for src, dst, _ in EVAL:
        dst_answer = by([r for r in TRAIN if r[1] == dst])
        pair_rows = [r for r in TRAIN if r[0] == src and r[1] == dst]
        if name == "global_median":
            out.append((*glob_answer, "own"))
        elif name == "dst_median":
            out.append((*dst_answer, "own") if dst_answer else (*glob_answer, "global_median"))
        else:
            fallback = (*dst_answer, "dst_median") if dst_answer else (*glob_answer, "global_median")
            if name == "pair_median":
                answer = by(pair_rows)
                out.append((*answer, "own") if answer else fallback)
            else:  # pair_last: latest by time, file order breaking ties
                good = [(t, i, r) for i, (s, d, r, t) in enumerate(TRAIN) if (s, d) == (src, dst) and r >= 0]
                every = [(t, i, r) for i, (s, d, r, t) in enumerate(TRAIN) if (s, d) == (src, dst)]
                if good:
                    out.append((max(good)[2], math.nan, math.nan, float(max(every)[2] < 0), "own"))
                else:
                    out.append((fallback[0], math.nan, math.nan, fallback[3], fallback[4]))
    return out


@pytest.mark.parametrize("name", bl.NAMES)
def test_baseline_predictions_match_an_independent_computation(name):
    fitted = bl.fit(_obs(TRAIN))
    pred = bl.predict(fitted, name, [e[0] for e in EVAL], [e[1] for e in EVAL])
    for i, (value, low, high, fail, level) in enumerate(_expected(name)):
        assert pred.value[i] == pytest.approx(value), (name, i)
        for got, want in ((pred.low[i], low), (pred.high[i], high)):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want), (name, i)
        assert pred.fail_prob[i] == pytest.approx(fail), (name, i)
        assert bl.LEVELS[pred.level[i]] == level, (name, i)


def test_hand_checked_values():
    fitted = bl.fit(_obs(TRAIN))
    src, dst = [e[0] for e in EVAL], [e[1] for e in EVAL]
    # Successful train RTTs: 10 12 14 40 44 100 120 130 -> median (40 + 44) / 2.
    assert bl.predict(fitted, "global_median", src, dst).value[0] == 42.0
    last = bl.predict(fitted, "pair_last", src, dst)
    assert last.value[0] == 14.0 and last.fail_prob[0] == 1.0  # the pair's last ping failed
    assert last.value[1] == 44.0  # tie on time: the later row
    assert bl.predict(fitted, "pair_median", src, dst).value[0] == 12.0
    assert bl.predict(fitted, "dst_median", src, dst).value[3] == 120.0  # d2: 100 120 130


def _metrics_by_hand(true, value, low, high, fail):
    scored = [i for i, t in enumerate(true) if t > 0 and not math.isnan(value[i]) and value[i] >= 0]
    errs = [abs(value[i] - true[i]) for i in scored]
    logs = [abs(math.log(max(value[i], 1e-3) / true[i])) for i in scored]
    inside = [low[i] <= true[i] <= high[i] for i in scored if not (math.isnan(low[i]) or math.isnan(high[i]))]
    return {
        "median_abs_error_ms": statistics.median(errs),
        "mean_abs_error_ms": statistics.fmean(errs),
        "median_abs_log_ratio": statistics.median(logs),
        "failure_accuracy": statistics.fmean([(f > 0.5) == (t < 0) for f, t in zip(fail, true)]),
        "calibration_10_90": statistics.fmean(inside) if inside else None,
        "scored": len(scored),
    }


@pytest.mark.parametrize("name", bl.NAMES)
def test_metrics_match_an_independent_computation(name):
    fitted = bl.fit(_obs(TRAIN))
    pred = bl.predict(fitted, name, [e[0] for e in EVAL], [e[1] for e in EVAL])
    true = [e[2] for e in EVAL]
    got = bl.metrics(np.array(true), pred)
    want = _metrics_by_hand(true, pred.value.tolist(), pred.low.tolist(), pred.high.tolist(), pred.fail_prob.tolist())
    for key, value in want.items():
        assert got[key] == (pytest.approx(value) if value is not None else None), key
    assert got["true_failures"] == 1 and got["measurements"] == len(EVAL)
    levels = [e[4] for e in _expected(name)]
    for level in ("dst_median", "global_median"):
        assert got["fallback"][level] == pytest.approx(levels.count(level) / len(EVAL))


def test_fallback_rates_for_unseen_sources():
    fitted = bl.fit(_obs(TRAIN))
    got = bl.metrics(np.array([e[2] for e in EVAL]), bl.predict(fitted, "pair_median", [e[0] for e in EVAL],
                                                                [e[1] for e in EVAL]))
    # Pairs known: rows 0 and 1; dst known: rows 2 and 3; global: rows 4 and 5.
    assert got["fallback"] == {"dst_median": pytest.approx(2 / 6), "global_median": pytest.approx(2 / 6)}


def test_model_summary_of_samples():
    samples = np.array([
        [1.0, 2.0, 3.0, 4.0, -1.0],  # one failure in five
        [-1.0, -1.0, -1.0, 5.0, 6.0],  # mostly failing
        [-1.0, -1.0, -1.0, -1.0, -1.0],  # all failing: no RTT
        [np.nan, np.inf, 7.0, 8.0, 9.0],  # invalid samples count as neither
    ])  # fmt: skip
    pred = bl.summarize_samples(samples)
    assert pred.value[0] == 2.5 and pred.fail_prob[0] == pytest.approx(0.2)
    assert pred.low[0] == pytest.approx(_quantile([1, 2, 3, 4], 0.1))
    assert pred.high[0] == pytest.approx(_quantile([1, 2, 3, 4], 0.9))
    assert pred.value[1] == 5.5 and pred.fail_prob[1] == pytest.approx(0.6)
    assert math.isnan(pred.value[2]) and pred.fail_prob[2] == 1.0
    assert pred.value[3] == 8.0 and pred.fail_prob[3] == 0.0
    got = bl.metrics(np.array([2.0, 6.0, 3.0, -1.0]), pred)
    assert got["scored"] == 2 and got["unscored_successes"] == 1
    # predicted failure: rows 1 and 2; true failure: row 3 -> right on row 0 only.
    assert got["failure_accuracy"] == pytest.approx(0.25)
    assert got["median_abs_error_ms"] == pytest.approx(statistics.median([0.5, 0.5]))


def test_context_last_falls_back_one_level_coarser():
    fitted = bl.fit(_obs(TRAIN))
    dst = bl.predict(fitted, "dst_median", ["a", "b", "c"], ["d1", "d9", "d2"])
    pred = bl.context_last(np.array([7.0, np.nan, np.nan]), np.array([0.0, 1.0, 0.0]), dst)
    assert pred.value.tolist()[0] == 7.0
    assert pred.value[1] == dst.value[1] and pred.value[2] == dst.value[2]
    assert [bl.LEVELS[i] for i in pred.level] == ["own", "global_median", "dst_median"]
    assert np.isnan(pred.low).all()


def _point(values):
    values = np.asarray(values, np.float64)
    nan = np.full(len(values), np.nan)
    return bl.Prediction(values, nan, nan, np.zeros(len(values)), np.zeros(len(values), np.int64))


def test_paired_comparison():
    true = np.array([10.0, 20.0, 30.0, -1.0])
    a, b = _point([11.0, 22.0, 33.0, 5.0]), _point([12.0, 22.0, 35.0, 5.0])  # errors 1 2 3 | 2 2 5
    got = bl.compare(true, a, b, seed=0, resamples=200)
    assert got["measurements"] == 3  # the failed measurement is not scored
    assert got["median_abs_error_diff_ms"] == 0.0  # medians 2 and 2
    assert got["a_better_share"] == pytest.approx((1 + 0.5 + 1) / 3)
    shifted = bl.compare(true, _point(true + 1), _point(true + 2), resamples=50)
    assert shifted["median_abs_error_diff_ms"] == -1.0 and shifted["ci95"] == [-1.0, -1.0]
    assert shifted["a_better_share"] == 1.0
    assert bl.compare(true, _point([np.nan] * 4), b)["ci95"] is None
