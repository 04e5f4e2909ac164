"""Evaluations of the same rows in two schemes, paired: ``trainer.evaluate --choose_by row`` picks the same
measurements in a v1 and a v2 dataset of the bundled sample, and ``trainer.eval.compare`` pairs them."""

from __future__ import annotations

import csv
import json
import statistics

import numpy as np
import pytest

from trainer.eval import choice, compare, evaluate

N = 300


def _rows(report_dir) -> list[dict]:
    with open(report_dir / "predictions.csv") as f:
        return list(csv.DictReader(f))


def _key(row: dict) -> tuple:
    return row["src_addr"], row["dst_addr"], int(row["event_time"])


@pytest.fixture(scope="module")
def reports(sample_dataset, sample_dataset_v2, tmp_path_factory):
    """Baseline evaluations of N test measurements of v1 and v2 datasets of the sample (the session's, from
    tests/conftest.py), chosen by row and by position."""
    d = tmp_path_factory.mktemp("compare")
    out = {}
    for name, ds in (("v1", sample_dataset), ("v2", sample_dataset_v2)):
        for by in ("row", "position"):
            out[name, by] = d / f"{name}-{by}"
            assert evaluate.run(["--baselines_only", "--data_dir", str(ds), "--max_measurements", str(N),
                                 "--choose_by", by, "--output", str(out[name, by])]) == 0
    return out


@pytest.mark.slow
def test_choose_by_row_scores_the_same_rows_in_both_schemes(reports):
    v1, v2 = _rows(reports["v1", "row"]), _rows(reports["v2", "row"])
    assert len(v1) == len(v2) == N
    assert sorted(map(_key, v1)) == sorted(map(_key, v2))
    # Positions differ between the two packings, so the default choice picks different rows.
    p1, p2 = _rows(reports["v1", "position"]), _rows(reports["v2", "position"])
    assert len(set(map(_key, p1)) & set(map(_key, p2))) < N // 2
    meta = json.loads((reports["v1", "row"] / "report.json").read_text())["meta"]
    assert meta["choose_by"] == "row" and meta["evaluated_measurements"] == N


@pytest.mark.slow
def test_compare_pairs_the_rows_and_reports_independently_checked_errors(reports, tmp_path, capsys):
    out = tmp_path / "cmp.md"
    assert compare.run([str(reports["v1", "row"]), str(reports["v2", "row"]), "--names", "v1,v2",
                        "--predictor", "dst_median", "--output", str(out)]) == 0
    result = json.loads((tmp_path / "cmp.json").read_text())
    v1, v2 = _rows(reports["v1", "row"]), _rows(reports["v2", "row"])
    keys = [_key(r) for r in v1]
    once = {k for k in keys if keys.count(k) == 1}
    assert result["counts"]["paired"] == len(once)
    assert result["counts"]["a_repeated"] == N - len(once)
    # The median absolute error of each side, on the paired rows, against v1's true RTTs.
    truth = {_key(r): float(r["true_rtt"]) for r in v1 if _key(r) in once}
    for name, rows in (("v1", v1), ("v2", v2)):
        errs = [abs(float(r["dst_median_rtt"]) - truth[_key(r)]) for r in rows
                if _key(r) in once and truth[_key(r)] > 0]
        got = result["predictors"][f"dst_median ({name})"]["median_abs_error_ms"]
        assert got == pytest.approx(statistics.median(errs))
    # The destination median reads the same train rows in both schemes: a difference within the RTT code.
    diff = result["predictors"]["dst_median (v1)"]["vs_b"]
    assert abs(diff["median_abs_error_diff_ms"]) < 0.01 * statistics.median(truth.values())
    assert diff["ci95"][0] <= diff["median_abs_error_diff_ms"] <= diff["ci95"][1]
    assert out.read_text() == capsys.readouterr().out
    assert "| context_last (v1) |" in out.read_text()


@pytest.mark.slow
def test_compare_refuses_reports_of_other_rows_and_bad_arguments(reports, tmp_path, capsys):
    # A report whose true RTT for a paired row is not the other's: not the same rows.
    bad = tmp_path / "bad"
    bad.mkdir()
    rows = _rows(reports["v2", "row"])
    i = next(i for i, r in enumerate(rows) if float(r["true_rtt"]) > 0)
    rows[i]["true_rtt"] = str(float(rows[i]["true_rtt"]) * 1.5)
    with open(bad / "predictions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (bad / "report.json").write_text((reports["v2", "row"] / "report.json").read_text())
    capsys.readouterr()
    assert compare.run([str(reports["v1", "row"]), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "disagree on 1 of" in err and "not evaluations of the same rows" in err
    # An older predictions.csv without event_time.
    old = tmp_path / "old"
    old.mkdir()
    with open(old / "predictions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "event_time"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (old / "report.json").write_text("{}")
    assert compare.run([str(reports["v1", "row"]), str(old)]) == 2
    assert "no column event_time" in capsys.readouterr().err
    assert compare.run([str(reports["v1", "row"]), str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert compare.run([str(reports["v1", "row"]), str(reports["v2", "row"]), "--predictor", "oracle"]) == 2
    assert "no predictor 'oracle'" in capsys.readouterr().err
    assert compare.run([str(reports["v1", "row"]), str(reports["v2", "row"]), "--names", "v1"]) == 2
    assert "--names takes two labels" in capsys.readouterr().err
    assert not (tmp_path / "cmp.md").exists()


def test_choose_rows_takes_the_lowest_hashes_in_file_order():
    h = np.array([50, 10, 40, 10, 30], np.uint64)
    assert choice.choose_rows(h, 2).tolist() == [1, 3]
    assert choice.choose_rows(h, 3).tolist() == [1, 3, 4]
    assert choice.choose_rows(h, 0).tolist() == [0, 1, 2, 3, 4]
    assert choice.choose_rows(h, 9).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="expected one of position, row"):
        choice.chosen(None, "test", 5, 2, 0, "random")


def test_evaluate_refuses_an_unknown_choose_by(tmp_path, capsys):
    assert evaluate.run(["--baselines_only", "--data_dir", str(tmp_path), "--choose_by", "random",
                         "--output", str(tmp_path / "r")]) == 2
    assert "choose_by" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
