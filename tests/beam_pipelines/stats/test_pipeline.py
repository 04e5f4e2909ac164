"""python -m beam_pipelines.stats end to end: the Beam job, its outputs, its errors, and --dataset on a
real pretokenized sample."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.common.progress import Progress, sum_markers, write_marker
from beam_pipelines.make_sample import synth
from beam_pipelines.stats import pipeline as stats

IN_MEMORY = "--direct_running_mode=in_memory"


def run_stats(args, out, *extra) -> tuple[int, dict | None]:
    rc = stats.run([*args, "--output", str(out), *extra])
    path = os.path.join(out, "report.json")
    if not os.path.exists(path):
        return rc, None
    with open(path) as f:
        return rc, json.load(f)


def test_raw_report_matches_independent_computation(parquet_inputs, tmp_path, helpers, capsys):
    pattern, tables = parquet_inputs
    rc, report = run_stats(["--input", pattern], tmp_path, IN_MEMORY, "--no_html")
    assert rc == 0
    helpers.check_against(report, helpers.expected_raw(tables))
    assert [f["rows"] for f in report["input"]["files"]] == [t.num_rows for t in tables]
    assert report["input"]["pattern"] == pattern
    out = capsys.readouterr()
    assert "rows/s" in out.out and "[stats]" in out.err
    assert not os.path.exists(tmp_path / stats._TMP_DIR)
    md = (tmp_path / "report.md").read_text()
    assert f"| Rows | {report['rows']:,} |" in md and "| IPv4 |" in md and "## Method" in md


def test_report_json_is_deterministic(parquet_inputs, tmp_path):
    # Same rows in other files and row groups: the same report, byte for byte (apart from the inputs).
    pattern, tables = parquet_inputs
    d = tmp_path / "other_layout"
    d.mkdir()
    pq.write_table(pa.concat_tables([tables[0], tables[2]]), d / "all.parquet", row_group_size=333)
    pq.write_table(tables[1], d / "mid.parquet", row_group_size=5000)
    runs = []
    for i, p in enumerate((pattern, str(d / "*.parquet"))):
        rc, report = run_stats(["--input", p], tmp_path / f"r{i}", IN_MEMORY, "--no_html")
        assert rc == 0
        report.pop("input")
        runs.append(json.dumps(report, sort_keys=True))
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_default_runner_mode_all_cores(parquet_inputs, tmp_path):
    # No runner options: the DirectRunner's multi-process mode on every core, as users run it.
    pattern, _ = parquet_inputs
    rc, default = run_stats(["--input", pattern], tmp_path / "default", "--no_html")
    assert rc == 0
    rc, in_memory = run_stats(["--input", pattern], tmp_path / "mem", IN_MEMORY, "--no_html")
    assert default == in_memory


@pytest.mark.slow
def test_dask_runner_gives_the_same_report(parquet_inputs, tmp_path):
    # The DaskRunner only computes the graph of the last transform: the summary writer must depend on all.
    distributed = pytest.importorskip("distributed")
    pattern, _ = parquet_inputs
    rc, direct = run_stats(["--input", pattern], tmp_path / "direct", IN_MEMORY, "--no_html")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        rc, dask = run_stats(
            ["--input", pattern],
            tmp_path / "dask",
            "--runner=DaskRunner",
            f"--dask_client_address={cluster.scheduler_address}",
            "--no_html",
        )
        with pytest.raises(ValueError, match="No clients found"):  # the job closed the runner's client
            distributed.default_client()
    assert rc == 0 and dask == direct


def _expect_input_error(args, out, capsys, *needles):
    rc, report = run_stats(args, out, IN_MEMORY)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert report is None and not any(os.path.exists(os.path.join(out, f)) for f in stats.REPORT_FILES)
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err


def test_glob_matching_nothing(tmp_path, capsys):
    _expect_input_error(
        ["--input", str(tmp_path / "nope*.parquet")], tmp_path / "out", capsys, "matches no file", "nope*.parquet"
    )


def test_not_parquet(tmp_path, capsys):
    (tmp_path / "a.parquet").write_text("hello")
    _expect_input_error(
        ["--input", str(tmp_path / "*.parquet")], tmp_path / "out", capsys, "a.parquet", "not a readable Parquet file"
    )


def test_missing_column(dirty, tmp_path, capsys):
    pq.write_table(dirty.drop_columns(["rtt"]), tmp_path / "x.parquet")
    _expect_input_error(
        ["--input", str(tmp_path / "x.parquet")], tmp_path / "out", capsys, "x.parquet", "'rtt'", "missing"
    )


def test_wrong_column_type(dirty, tmp_path, capsys):
    pq.write_table(dirty.set_column(5, "rtt", dirty.column("rtt").cast(pa.string())), tmp_path / "x.parquet")
    _expect_input_error(
        ["--input", str(tmp_path / "x.parquet")], tmp_path / "out", capsys, "x.parquet", "'rtt'", "type"
    )


def test_usage_errors(tmp_path, capsys):
    assert stats.run(["--dataset", str(tmp_path), "--output", str(tmp_path / "o"), "--runner=DirectRunner"]) == 2
    assert "Beam options apply to --input only" in capsys.readouterr().err
    assert stats.run(["--output", str(tmp_path)]) == 2  # neither --input nor --dataset: one error line, no exit
    assert capsys.readouterr().err.strip() == "error: one of the arguments --input --dataset is required"


def test_empty_input(dirty, tmp_path):
    pq.write_table(dirty.slice(0, 0), tmp_path / "empty.parquet")
    rc, report = run_stats(["--input", str(tmp_path / "empty.parquet")], tmp_path / "out", IN_MEMORY)
    assert rc == 0 and report["rows"] == 0 and report["rtt_ms"] == {"count": 0}
    assert os.path.exists(tmp_path / "out" / "report.html")


@pytest.mark.slow
def test_dataset_report_of_real_pretokenize_matches_decode(sample_dir, sample_dataset, tmp_path, helpers):
    ds = sample_dataset  # the real job on the bundled sample, run once per session (tests/conftest.py)
    rc, report = run_stats(["--dataset", str(ds)], tmp_path / "report")
    assert rc == 0
    helpers.check_dataset_report(report, str(ds))
    rc, raw = run_stats(["--input", str(sample_dir / "*.parquet")], tmp_path / "raw", IN_MEMORY, "--no_html")
    # The two halves agree with each other and with the manifest.
    manifest = json.loads((ds / "manifest.json").read_text())
    assert raw["rejected_by_reason"] == manifest["rejected"]["by_reason"] == report["rejected"]["by_reason"]
    assert raw["tokenizer"]["accepted_rows"] == report["totals"]["measurements"]
    assert raw["tokenizer"]["tokens"] == report["totals"]["tokens"]
    assert report["manifest"]["fingerprint"] == manifest["fingerprint"]


def test_output_directory_is_replaced_atomically(parquet_inputs, tmp_path):
    pattern, _ = parquet_inputs
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("stale")
    rc, _ = run_stats(["--input", pattern], out, IN_MEMORY, "--no_html")
    assert rc == 0
    assert sorted(os.listdir(out)) == ["report.json", "report.md"]  # the stale page is gone, no temp files left
    shutil.rmtree(out)


def test_progress_lines(tmp_path, capsys):
    markers = tmp_path / "progress"
    markers.mkdir()
    write_marker(str(markers), "00000-00001", rows=300)
    write_marker(str(markers), "00000-00002", rows=200)
    write_marker(str(markers), "00000-00001", rows=500)  # a later batch of the same row group replaces it
    assert sum_markers(str(markers), "*.json", "rows") == 700
    read = functools.partial(sum_markers, str(markers), "*.json", "rows")
    with Progress("stats", read, 1000, unit="rows", label="read:", every=0.05):
        time.sleep(0.3)
    err = capsys.readouterr().err
    assert "[stats] read: 700/1,000 rows (70%)" in err and "ETA" in err


@pytest.mark.slow
def test_failure_while_reading_names_the_file_and_keeps_only_the_log(tmp_path, capsys):
    # A damaged row group is found only while the pipeline reads it: still bad input (exit 2).
    path = tmp_path / "x.parquet"
    pq.write_table(synth.generate(20_000, seed=1), path, row_group_size=5_000, compression="none")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = np.random.default_rng(3).bytes(4000)  # footer intact
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    rc, report = run_stats(["--input", str(path)], out, IN_MEMORY, "--no_html")
    err = capsys.readouterr().err
    assert rc == 2 and report is None, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "cannot be read" in errors[0], err
    assert "Traceback" not in err and "[while running" not in err, err
    assert f"no report was written to {out}" in err
    log = out / stats._TMP_DIR / "pipeline.log"
    assert f"Beam's log, with the workers' tracebacks: {log}" in err
    assert "Traceback (most recent call last)" in log.read_text()
    assert os.listdir(out) == [stats._TMP_DIR] and os.listdir(log.parent) == ["pipeline.log"]


def test_output_locked_by_a_live_writer_is_refused_untouched(parquet_inputs, tmp_path, capsys):
    pattern, _ = parquet_inputs
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("the other run's")
    lock = json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "started": "2026-01-01T00:00:00+00:00"})
    (out / "_writer.lock").write_text(lock)
    rc, _ = run_stats(["--input", pattern], out, IN_MEMORY)
    assert rc == 2 and f"{out} is being written by another run" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["_writer.lock", "report.md"]
    assert (out / "report.md").read_text() == "the other run's"
