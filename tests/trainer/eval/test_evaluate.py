"""The evaluation: the context baseline, the choice of measurements, end-to-end runs and their errors."""

from __future__ import annotations

import csv
import datetime as dt
import json
import statistics

import numpy as np
import pytest

from tests.trainer.helpers import make_config
from tokenizer import decode_measurement, encode_measurement, split_measurements
from tokenizer.vocab import PAD, RTT_START
from trainer import data
from trainer.eval import baselines as bl
from trainer.eval import choice, columns, evaluate, scoring, spill
from trainer.eval import report as report_files


def _row(src, dst, rtt, minute):
    return {
        "msm_id": 1001, "event_time": dt.datetime(2025, 7, 1, 0, minute, tzinfo=dt.timezone.utc), "src_addr": src,
        "dst_addr": dst, "ip_version": 4, "rtt": rtt, "size": 64, "packet_error_count": 0,
    }  # fmt: skip


def test_context_last_uses_only_earlier_measurements_of_the_same_pair():
    rows = [
        _row("10.0.0.1", "8.8.8.8", 11.0, 0),
        _row("10.0.0.1", "9.9.9.9", 50.0, 1),
        _row("10.0.0.1", "8.8.8.8", 12.0, 2),
        _row("10.0.0.1", "8.8.8.8", -1.0, 3),  # latest earlier measurement of the pair failed
        _row("10.0.0.1", "8.8.8.8", 13.0, 4),  # query: 12.0, latest failed
        _row("10.0.0.1", "1.1.1.1", 70.0, 5),  # query: no earlier measurement of this pair
        _row("10.0.0.1", "9.9.9.9", 51.0, 6),  # query: 50.0
    ]
    tokens = np.concatenate([encode_measurement(r) for r in rows])
    record = np.full(1024, PAD, np.uint16)
    record[: len(tokens)] = tokens
    records = np.stack([np.full(1024, PAD, np.uint16), record])
    records[0, :45] = encode_measurement(_row("10.0.0.1", "1.1.1.1", 5.0, 9))  # another record: never context
    spans = columns.measurement_spans(records)
    assert len(spans) == 8 and spans.record.tolist() == [0] + [1] * 7
    cols = columns.decode_block(records, columns.Addresses())
    ctx = bl.pair_context(cols.record, cols.src, cols.dst, cols.rtt)
    chosen = [5, 6, 7, 1]
    values, failed = ctx.last[chosen], ctx.last_failed[chosen]
    assert values[0] == 12.0 and failed[0] == 1.0
    assert np.isnan(values[1]) and failed[1] == 0.0
    assert values[2] == 50.0 and failed[2] == 0.0
    assert np.isnan(values[3])  # the record's first measurement has no context
    # The means over the pair's earlier successes: 11 and 12 (the failure is skipped).
    assert ctx.mean_last3[5] == 11.5
    a = bl.EWMA_ALPHA
    assert ctx.ewma[5] == pytest.approx(a * 12.0 + (1 - a) * 11.0)
    assert ctx.ewma[7] == 50.0 and np.isnan(ctx.ewma[6])


def test_choice_of_measurements_is_deterministic():
    a = choice.choose(1000, 50, seed=4)
    assert np.array_equal(a, choice.choose(1000, 50, seed=4))
    assert not np.array_equal(a, choice.choose(1000, 50, seed=5))
    assert len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0)
    assert np.array_equal(choice.choose(10, 0, seed=4), np.arange(10))
    assert np.array_equal(choice.choose(10, 50, seed=4), np.arange(10))


@pytest.mark.slow
def test_evaluate_run_writes_the_report(trained_workdir, eval_dataset, tmp_path, capsys):
    out = tmp_path / "report"
    rc = evaluate.run([
        "--workdir", str(trained_workdir), "--data_dir", str(eval_dataset), "--split", "test",
        "--output", str(out), "--max_measurements", "12", "--samples", "16", "--nll_batches", "2", "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    metric_keys = {"median_abs_error_ms", "median_abs_log_ratio", "failure_accuracy", "calibration_10_90",
                   "mean_abs_error_ms", "scored", "measurements"}
    assert metric_keys <= set(report["rtt"]["model"])
    assert set(report["rtt"]["baselines"]) == set(scoring.ALL_BASELINES)
    assert set(report["rtt"]["model"]["vs"]) == set(report["rtt"]["baselines"])
    assert {"median_abs_error_diff_ms", "ci95", "a_better_share"} <= set(report["rtt"]["model"]["vs"]["global_median"])
    for name, figures in report["rtt"]["baselines"].items():
        assert metric_keys <= set(figures), name
        assert figures["measurements"] == 12
    kinds = ("src_addr", "dst_addr", "rtt", "size", "errors", "timestamp", "msm_id", "role")
    assert set(report["nll_per_field"]) == set(kinds)
    for kind in kinds:
        f = report["nll_per_field"][kind]
        assert f["bits_per_token"] > 0 and f["bits_per_field"] > 0 and f["tokens"] > 0
    # 8-byte fields: bits per field = 8 x bits per token (every measurement has all 8 tokens as targets).
    rtt = report["nll_per_field"]["rtt"]
    assert rtt["tokens"] == 8 * report["nll"]["measurements"]
    assert rtt["bits_per_field"] == pytest.approx(8 * rtt["bits_per_token"])
    assert report["meta"]["evaluated_measurements"] == 12 and report["meta"]["checkpoint_step"] > 0

    md = (out / "report.md").read_text()
    assert "| **model** |" in md and "| global_median |" in md and "bits per token" in md
    assert (out / "rtt_pred_vs_true.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert "| **model** |" in capsys.readouterr().out

    # The global median's figure from an independent computation: decode every train measurement.
    dataset = data.open_dataset(str(eval_dataset), make_config(eval_dataset))
    train_rtts = [decode_measurement(m)["rtt"] for r in columns.read_records(dataset, "train")
                  for m in split_measurements(r)]
    g = statistics.median([x for x in train_rtts if x >= 0])
    true = [float(r["true_rtt"]) for r in rows]
    want = statistics.median([abs(g - t) for t in true if t > 0])
    assert report["rtt"]["baselines"]["global_median"]["median_abs_error_ms"] == pytest.approx(want)
    assert all(float(r["global_median_rtt"]) == pytest.approx(g) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir", "{empty}", "--data_dir", "{data}", "--output", "{out}"], "no checkpoints/ directory"),
        (["--workdir", "{trained}", "--data_dir", "{empty}", "--output", "{out}"], "no manifest.json"),
        (["--workdir", "{trained}", "--data_dir", "{data}", "--output", "{out}", "--split", "nope"], "no split 'nope'"),
        (["--workdir", "{trained}", "--data_dir", "{data}", "--output", "{out}", "--samples", "0"], "--samples"),
    ],
)
def test_evaluate_bad_input_is_one_clear_error(args, message, trained_workdir, eval_dataset, tmp_path, capsys):
    paths = {"empty": str(tmp_path), "data": str(eval_dataset), "out": str(tmp_path / "r"),
             "trained": str(trained_workdir)}
    rc = evaluate.run([a.format(**paths) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_evaluate_without_a_checkpoint_exits_2(tmp_path, capsys):
    rc = evaluate.run(["--workdir", str(tmp_path / "w"), "--data_dir", str(tmp_path), "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "no checkpoints/ directory" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_baselines_only_scores_every_measurement_without_a_model(eval_dataset, tmp_path, capsys):
    out = tmp_path / "report"
    rc = evaluate.run(["--baselines_only", "--data_dir", str(eval_dataset), "--split", "test", "--output", str(out),
                       "--max_measurements", "0"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((eval_dataset / "manifest.json").read_text())
    n = manifest["splits"]["test"]["measurements"]
    assert report["meta"]["evaluated_measurements"] == report["meta"]["split_measurements"] == n
    assert "model" not in report["rtt"] and "nll" not in report
    assert set(report["rtt"]["baselines"]) == set(scoring.ALL_BASELINES)
    for name, figures in report["rtt"]["baselines"].items():
        assert figures["measurements"] == n, name
    # --split_by src: every test source is unseen, so the pair baselines fall back for every measurement and
    # the coordinate ones only where the record holds no earlier measurement of the source.
    assert report["meta"]["unseen_source_share"] == 1.0
    assert report["rtt"]["baselines"]["pair_median"]["fallback"]["dst_median"] == 1.0
    mf = report["rtt"]["baselines"]["matrix_factorization"]["fallback"]["dst_median"]
    assert 0 < mf < 0.5
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    # The per-row decode gives the same true RTTs and addresses, in file order.
    dataset = data.open_dataset(str(eval_dataset), make_config(eval_dataset))
    decoded = [decode_measurement(m) for r in columns.read_records(dataset, "test") for m in split_measurements(r)]
    assert [float(r["true_rtt"]) for r in rows] == [d["rtt"] for d in decoded]
    assert [r["src_addr"] for r in rows[:50]] == [d["src_addr"] for d in decoded[:50]]
    # A measurement is placed by the factorisation iff its record holds an earlier successful measurement of it
    # source to a train destination: the first measurement of every record falls back.
    firsts = [r for r in rows if r["start"] == "0"]
    assert firsts and all(r["matrix_factorization_level"] == "dst_median" for r in firsts)
    assert "| vivaldi |" in capsys.readouterr().out and "| vivaldi |" in (out / "report.md").read_text()
    # Deterministic: a second run gives the same predictions, byte for byte.
    again = tmp_path / "again"
    assert evaluate.run(["--baselines_only", "--data_dir", str(eval_dataset), "--output", str(again)]) == 0
    assert (again / "predictions.csv").read_bytes() == (out / "predictions.csv").read_bytes()


@pytest.mark.slow
def test_spilled_predictions_give_the_same_report_and_csv(eval_dataset, tmp_path, monkeypatch):
    # The in-memory run (the test split is far below SPILL_ROWS) against one whose predictions all go to disk.
    args = ["--baselines_only", "--data_dir", str(eval_dataset), "--split", "test", "--max_measurements", "0"]
    assert evaluate.run([*args, "--output", str(tmp_path / "memory")]) == 0
    made = []
    real = spill.SpilledPredictions

    def spilled(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(scoring, "SPILL_ROWS", 0)
    monkeypatch.setattr(spill, "SpilledPredictions", spilled)
    assert evaluate.run([*args, "--output", str(tmp_path / "disk")]) == 0
    n = json.loads((eval_dataset / "manifest.json").read_text())["splits"]["test"]["measurements"]
    assert len(made) == 1 and made[0].rows == n > 1_000  # every test measurement went through the files
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("memory", "disk"))
    a["meta"].pop("timings"), b["meta"].pop("timings")
    assert a == b
    assert (tmp_path / "disk" / "predictions.csv").read_bytes() == (tmp_path / "memory" / "predictions.csv").read_bytes()
    # The CSV in small chunks is the same file as in one.
    table = {"record": np.arange(5), "start": np.zeros(5, np.int64), "src_addr": np.array(["a", "b", "c", "d", "e"],
             dtype=object), "dst_addr": np.array(["1.2.3.4"] * 5, dtype=object), "event_time": np.arange(5) + 1_700_000_000,
             "true_rtt": np.array([1.5, -1, 3, 4, 5]),
             "x": bl.Prediction(np.array([1.0, np.nan, 2, 3, 4]), np.zeros(5), np.ones(5), np.full(5, 0.5),
                                np.array([0, 1, 2, 0, 1]))}
    report_files.write_predictions(table, str(tmp_path / "one.csv"))
    report_files.write_predictions(table, str(tmp_path / "many.csv"), chunk_rows=2)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "many.csv").read_bytes()
    assert (tmp_path / "one.csv").read_text().count("\n") == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--baselines_only", "--workdir", "{empty}"], "--baselines_only takes no model options (got --workdir)"),
        (["--baselines_only", "--samples", "4", "--step", "2"], "(got --step, --samples)"),
        (["--baselines_only", "--split", "nope"], "no split 'nope'"),
        (["--baselines_only", "--train_split", "nope"], "no split 'nope'"),
        (["--baselines_only", "--max_measurements", "-1"], "--max_measurements must be >= 0"),
        (["--baselines_only", "--mf_rank", "0"], "--mf_rank"),
        (["--baselines_only", "--mf_reg", "0"], "--mf_reg"),
        ([], "--workdir is required"),
    ],
)
def test_baselines_only_bad_input_is_one_clear_error(args, message, eval_dataset, tmp_path, capsys):
    argv = ["--data_dir", str(eval_dataset), "--output", str(tmp_path / "r")] + [a.format(empty=str(tmp_path)) for a in args]
    rc = evaluate.run(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_baselines_only_without_a_dataset_exits_2(tmp_path, capsys):
    rc = evaluate.run(["--baselines_only", "--data_dir", str(tmp_path), "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "no manifest.json" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def _copy_dataset(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_baselines_only_unreadable_records_file_is_one_clear_error(eval_dataset, tmp_path, capsys):
    """A records file corrupted on disk fails while the split is read: one line naming the file, exit 2."""
    ds = _copy_dataset(eval_dataset, tmp_path / "ds")
    path = sorted((ds / "test").glob("*.array_record"))[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    rc = evaluate.run(["--baselines_only", "--data_dir", str(ds), "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert str(path) in err and "not a readable ArrayRecord file" in err
    assert not (tmp_path / "r").exists()


def test_baselines_only_malformed_record_is_one_clear_error(eval_dataset, tmp_path, capsys):
    """A record that is readable but not a well-formed token stream: one line naming the dataset, the split
    and the records, exit 2, no report; the tuning CLI, which reads the splits the same way, says the same."""
    from beam_pipelines.dataset.records import read_records, write_records
    from trainer.eval import tune

    ds = _copy_dataset(eval_dataset, tmp_path / "ds")
    manifest = json.loads((ds / "manifest.json").read_text())
    path = sorted((ds / "train").glob("*.array_record"))[0]
    records = read_records(str(path), manifest["seq_len"])
    records[0, 0] = PAD - 1  # the first record loses its MeasurementStart
    write_records(str(path), records, "snappy")
    for cli, argv in ((evaluate, ["--baselines_only", "--output", str(tmp_path / "r")]), (tune, [])):
        rc = cli.run(["--data_dir", str(ds), *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith(f"error: {ds}: split 'train': ") and "records 0.." in err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_tuning_refuses_the_test_split(eval_dataset, capsys):
    from trainer.eval import tune

    rc = tune.run(["--data_dir", str(eval_dataset), "--split", "test"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "never on test" in err


@pytest.mark.slow
def test_tuning_scores_each_setting_on_validation(eval_dataset, capsys):
    from trainer.eval import tune

    assert tune.run(["--data_dir", str(eval_dataset), "--ranks", "2", "--regs", "0.01,1", "--dims", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    mf = [x for x in lines if x["predictor"] == "matrix_factorization"]
    assert [(x["rank"], x["reg"]) for x in mf] == [(2, 0.01), (2, 1.0)]
    assert mf[0]["median_abs_error_ms"] != mf[1]["median_abs_error_ms"]  # the setting matters
    assert any(x["predictor"] == "vivaldi" and x["dims"] == 2 for x in lines)


def test_context_probe_groups_by_pair_history_and_block_order():
    from trainer.eval import context_probe

    rows = [_row("10.0.0.1", "8.8.8.8", 11.0 + i, i) for i in range(6)] + [_row("10.0.0.1", "9.9.9.9", 5.0, 9)]
    rows[1]["rtt"] = -1.0
    tokens = [encode_measurement(r) for r in rows]
    record = np.full((1, 1024), PAD, np.uint16)
    flat = np.concatenate(tokens)
    record[0, : len(flat)] = flat
    cols, rtt_pos, group = context_probe.measurement_groups(record)
    assert len(cols) == 7 and (record.reshape(-1)[rtt_pos - 1] == RTT_START).all()  # the first value token
    for i, t in enumerate(tokens):
        t = list(t)
        dst_first = t.index(2) < t.index(RTT_START)  # the destination block precedes the RTT block on disk
        pair = i >= 1 and i != 6  # an earlier *successful* measurement of the pair: row 0 (row 1 failed)
        want = ("pair" if pair else "new") + ("_before" if dst_first else "_after")
        assert context_probe.GROUPS[group[i]] == want, i
