"""``python -m trainer.predict``: the RTT distribution by descent, beside the model's own samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.eval import predict

QUERY = ["--src", "10.1.2.3", "--dst", "8.8.8.8", "--time", "2025-07-01T12:00:00Z"]


def _json_run(capsys, *args) -> dict:
    capsys.readouterr()
    assert predict.run([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_quantiles_are_deterministic_and_agree_with_the_samples(trained_workdir, capsys):
    """The issue's acceptance: the same rtt_quantiles twice and under another seed; for each level q the
    share of successful samples at or below the q-quantile is within 0.04 of q."""
    args = ["--workdir", str(trained_workdir), *QUERY, "--quantiles", "0.1,0.5,0.9", "--samples", "4096"]
    a = _json_run(capsys, *args)
    b = _json_run(capsys, *args)
    c = _json_run(capsys, *args, "--seed", "7")
    assert a["rtt_quantiles"] == b["rtt_quantiles"] == c["rtt_quantiles"]
    assert a["failure_probability"] == c["failure_probability"]
    assert list(a["rtt_quantiles"]) == ["0.1", "0.5", "0.9"]
    values = list(a["rtt_quantiles"].values())
    assert values == sorted(values) and all(np.isfinite(values)) and min(values) >= 0
    assert a["rtt_samples"] != c["rtt_samples"]  # the seed moves the samples, not the quantiles
    samples = np.array([np.nan if x is None else x for x in a["rtt_samples"]], np.float64)
    assert len(samples) == a["samples"] == 4096
    ok = samples[np.isfinite(samples) & (samples >= 0)]
    assert set(samples[samples < 0].tolist()) <= {-1.0}
    for key, x in a["rtt_quantiles"].items():
        assert abs(np.mean(ok <= x) - float(key)) <= 0.04, (key, x)
    assert abs(np.mean(samples == -1.0) - a["failure_probability"]) <= 0.03
    # The sampled summary is still there, and every measurement keeps what was given.
    assert a["rtt"]["samples"] == 4096 and a["rtt"]["p10"] <= a["rtt"]["p50"] <= a["rtt"]["p90"]
    assert all(m["src_addr"] == "10.1.2.3" and m["dst_addr"] == "8.8.8.8" for m in a["measurements"])


@pytest.mark.slow
def test_descent_alone_draws_no_samples(trained_workdir, capsys):
    answer = _json_run(capsys, "--workdir", str(trained_workdir), *QUERY, "--quantiles", "0.9,0.05,0.5,0.05")
    assert sorted(answer["rtt_quantiles"]) == ["0.05", "0.5", "0.9"]  # each level once
    q = answer["rtt_quantiles"]
    assert q["0.05"] <= q["0.5"] <= q["0.9"]
    assert answer["samples"] == 0 and "rtt_samples" not in answer and answer["measurements"] == []
    assert 0.0 <= answer["failure_probability"] <= 1.0
    assert predict.run(["--workdir", str(trained_workdir), *QUERY]) == 0
    out = capsys.readouterr().out
    assert "RTT (ms) by descent: q0.1 " in out and "q0.9" in out and "failure probability" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--src", "10.0.0.1", "--quantiles", "0.5,1.5"], "--quantiles: quantile level 1.5 is not strictly between"),
        (["--src", "10.0.0.1", "--quantiles", "median"], "--quantiles: 'median': expected comma-separated"),
        (["--given", "rtt=20", "--quantiles", "0.5"], "--quantiles: the RTT is given"),
        (["--src", "10.0.0.1", "--samples", "-3"], "--samples must be positive"),
    ],
)
def test_bad_quantile_options_are_one_clear_error(args, message, tmp_path, capsys):
    rc = predict.run(["--workdir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_sampled_rtts_for_json():
    assert predict._sampled_rtt(12.5) == 12.5
    assert predict._sampled_rtt(-1.0) == -1.0 and predict._sampled_rtt(-3e-200) == -1.0
    assert predict._sampled_rtt(float("-inf")) == -1.0
    assert predict._sampled_rtt(float("inf")) is None and predict._sampled_rtt(float("nan")) is None
