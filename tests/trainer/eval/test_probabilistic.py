"""RTT forecasts as distributions: scores, paired comparison, train baselines, and the evaluation's report."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest

from tests.trainer.helpers import make_config
from trainer import data
from trainer.eval import baselines as bl
from trainer.eval import columns, evaluate, html_report
from trainer.eval import probabilistic as pr


def _forecast(rows) -> pr.QuantileForecast:
    return pr.QuantileForecast(pr.LEVELS, np.array(rows, np.float64))


def test_scores_by_hand():
    # Quantiles 0.05 .. 0.95 of each forecast; the true RTTs fall inside some intervals and not others.
    f = _forecast([[1, 2, 4, 5, 6, 8, 9], [10, 20, 30, 40, 50, 60, 70], [1, 1, 1, 1, 1, 1, 1]])
    true = np.array([3.0, 65.0, -1.0])  # the failure is not scored
    s = pr.scores(true, f)
    assert s["scored"] == 2 and s["measurements"] == 3
    # 3 is outside [4, 6] (50%) and inside [2, 8] and [1, 9]; 65 outside [30, 50] and [20, 60], inside [10, 70].
    assert s["coverage"] == {"0.5": 0.0, "0.8": 0.5, "0.9": 1.0}
    # pinball at 0.5: |3 - 5| / 2 = 1 and |65 - 40| / 2 = 12.5; at 0.1 both true RTTs are above the quantile
    # (by 1 and 45), at 0.9 both below it (by 5 and 5).
    assert s["pinball_ms"]["0.5"] == pytest.approx((1 + 12.5) / 2)
    assert s["pinball_ms"]["0.1"] == pytest.approx((0.1 * 1 + 0.1 * 45) / 2)
    assert s["pinball_ms"]["0.9"] == pytest.approx((0.1 * 5 + 0.9 * 5) / 2)
    assert s["pinball_mean_ms"] == pytest.approx(np.mean([s["pinball_ms"][k] for k in ("0.1", "0.5", "0.9")]))
    assert "nll_bits" not in s


def test_pinball_is_the_quantile_loss():
    assert pr.pinball(np.array([10.0]), np.array([4.0]), 0.9)[0] == pytest.approx(5.4)
    assert pr.pinball(np.array([10.0]), np.array([14.0]), 0.9)[0] == pytest.approx(0.4)
    # The q-quantile of a sample minimises the mean pinball loss over constant predictions.
    x = np.random.default_rng(0).lognormal(3, 1, 2001)
    for q in (0.1, 0.5, 0.9):
        best = np.quantile(x, q)
        loss = lambda c: pr.pinball(x, np.full_like(x, c), q).mean()  # noqa: E731
        assert loss(best) <= min(loss(best * 1.05), loss(best * 0.95))


def test_likelihood_and_pit_reliability():
    f = pr.QuantileForecast(pr.LEVELS, np.tile(np.arange(1, 8, dtype=float), (4, 1)), None,
                            np.log(np.array([0.5, 0.25, 0.125, 0.5])), np.array([0.5, 0.95, 0.3, np.nan]))
    s = pr.scores(np.array([4.0, 4.0, 4.0, -1.0]), f)
    assert s["nll_bits"] == pytest.approx((1 + 2 + 3 + 1) / 4)
    assert s["nll_bits_success"] == pytest.approx(2.0) and s["nll_bits_failure"] == pytest.approx(1.0)
    assert s["pit_reliability"]["0.1"] == pytest.approx(1 / 3)  # only PIT 0.5 is within 0.45-0.55
    assert s["pit_reliability"]["0.5"] == pytest.approx(2 / 3)  # 0.5 and 0.3
    assert s["pit_reliability"]["0.98"] == pytest.approx(1.0)


def test_paired_comparison_is_seeded_and_brackets_the_difference():
    rng = np.random.default_rng(1)
    true = rng.lognormal(3, 0.5, 400)
    good = _forecast(np.quantile(true, pr.LEVELS)[None, :].repeat(400, axis=0))
    bad = _forecast(good.values * 3)
    c = pr.compare(true, good, bad, seed=2)
    assert c["measurements"] == 400 and c["pinball_mean_diff_ms"] < 0
    assert c["ci95"][0] <= c["pinball_mean_diff_ms"] <= c["ci95"][1] < 0
    assert pr.compare(true, good, bad, seed=2) == c


def test_samples_give_their_empirical_quantiles():
    x = np.array([[1.0, 2.0, 3.0, -1.0, np.inf], [-1.0, -1.0, np.nan, -1.0, -1.0]])
    f = pr.QuantileForecast.from_samples(x)
    np.testing.assert_allclose(f.values[0], np.quantile([1.0, 2.0, 3.0], pr.LEVELS))
    assert np.isnan(f.values[1]).all()


@pytest.mark.slow
def test_train_forecasts_match_an_independent_computation(eval_dataset):
    dataset = data.open_dataset(str(eval_dataset), make_config(eval_dataset))
    addresses = columns.Addresses()
    train = columns.decode_split(dataset, "train", addresses)
    test = columns.decode_split(dataset, "test", addresses)
    picked = test.take(np.arange(0, len(test), 97))
    fallback = bl.Prediction(*(np.full(len(picked), np.nan) for _ in range(4)), np.zeros(len(picked), np.int64))
    # A context point prediction that answers itself for every other measurement.
    own = np.arange(len(picked)) % 2 == 0
    point = {name: bl.Prediction(np.where(own, 20.0, np.nan), fallback.low, fallback.high, fallback.fail_prob,
                                 np.where(own, 0, 1)) for name in bl.CONTEXT_NAMES}
    out = pr.train_forecasts(dataset, "train", addresses, picked, point, sample_rows=10**9)
    assert set(out) == set(pr.BASELINES)
    ok = train.rtt >= 0
    for i in range(len(picked)):
        mine = train.rtt[ok & (train.dst == picked.dst[i])]
        want = np.quantile(mine, pr.LEVELS) if len(mine) else np.quantile(train.rtt[ok], pr.LEVELS)
        np.testing.assert_allclose(out["dst_quantiles"].values[i], want, rtol=1e-12)
        assert out["dst_quantiles"].own[i] == bool(len(mine))
    # Split by source: no test pair is in train, so the pair quantiles are the destination's.
    assert not out["pair_quantiles"].own.any()
    np.testing.assert_array_equal(out["pair_quantiles"].values, out["dst_quantiles"].values)
    # The residual baselines: 20 ms times exp(quantiles of log(true / context_last)) over train.
    ctx = bl.pair_context(train.record, train.src, train.dst, train.rtt)
    m = (train.rtt > 0) & np.isfinite(ctx.last)
    factor = np.exp(np.quantile(np.log(train.rtt[m] / np.maximum(ctx.last[m], bl.LOG_FLOOR_MS)), pr.LEVELS))
    f = out["context_last_residual"]
    np.testing.assert_allclose(f.values[own], np.tile(20.0 * factor, (own.sum(), 1)), rtol=1e-12)
    np.testing.assert_array_equal(f.values[~own], out["dst_quantiles"].values[~own])
    assert np.all(np.diff(f.values, axis=1) >= 0)


@pytest.mark.slow
def test_evaluation_reports_the_distribution(trained_workdir, eval_dataset, tmp_path):
    out = tmp_path / "report"
    rc = evaluate.run([
        "--workdir", str(trained_workdir), "--data_dir", str(eval_dataset), "--split", "test",
        "--output", str(out), "--max_measurements", "20", "--samples", "8", "--nll_batches", "1", "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    dist = report["rtt"]["distribution"]
    assert dist["levels"] == list(pr.LEVELS)
    assert set(dist["baselines"]) == set(pr.BASELINES)
    model = dist["model"]
    assert set(model["coverage"]) == {"0.5", "0.8", "0.9"}
    assert model["coverage"]["0.5"] <= model["coverage"]["0.8"] <= model["coverage"]["0.9"]
    assert model["nll_bits"] > 0 and set(model["pit_reliability"]) == {f"{x:g}" for x in pr.PIT_LEVELS}
    assert set(model["vs"]) == {*pr.BASELINES, "model_sampled"}
    assert "model_sampled" in dist and "model_sampled" in report["rtt"]
    assert report["meta"]["rtt_prediction"] == "descent" and report["meta"]["samples_per_measurement"] == 8
    # The model's point prediction is the descent median, its interval the 0.1 and 0.9 quantiles.
    import csv

    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and "model_sampled_rtt" in rows[0]
    for r in rows:
        lo, mid, hi = (float(r[k]) for k in ("model_p10", "model_rtt", "model_p90"))
        assert 0 <= lo <= mid <= hi and math.isfinite(hi)
    md = (out / "report.md").read_text()
    assert "## RTT distribution" in md and "| **model (descent)** |" in md and "| dst_quantiles |" in md
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "model (descent)" in page
    png = (out / "reliability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and base64.b64encode(png).decode() in page
    # Deterministic: the same run gives the same descent figures.
    again = tmp_path / "again"
    assert evaluate.run(["--workdir", str(trained_workdir), "--data_dir", str(eval_dataset), "--split", "test",
                         "--output", str(again), "--max_measurements", "20", "--nll_batches", "1",
                         "--no-progress"]) == 0
    second = json.loads((again / "report.json").read_text())
    assert second["rtt"]["distribution"]["model"]["pinball_ms"] == model["pinball_ms"]
    assert "model_sampled" not in second["rtt"]["distribution"]


def test_html_report_renders_our_markdown(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\nxyz")
    md = "# Title\n\nSome `code` and **bold**.\n\n| a | b |\n|---|---|\n| x | 1.5 |\n\n![a figure](fig.png)\n"
    page = html_report.render(md, str(tmp_path))
    assert "<title>Title</title>" in page and "<code>code</code>" in page and "<b>bold</b>" in page
    assert "<td class=num>1.5</td>" in page and "<td>x</td>" in page
    assert base64.b64encode(b"\x89PNG\r\n\x1a\nxyz").decode() in page
