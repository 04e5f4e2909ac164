"""Bad input, bad options, interruption and other runners for the pretokenize job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.pretokenize import pipeline as pretokenize

from beam_pipelines.make_sample import synth
from beam_pipelines.make_sample.shards import write_shards
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY, load_manifest, sha256_file, tree_digest


def _run(capsys, *args):
    code = pretokenize.run([*map(str, args), IN_MEMORY])
    return code, capsys.readouterr().err


def test_glob_matching_nothing(tmp_path, capsys):
    code, err = _run(capsys, "--input", tmp_path / "nothing-*.parquet", "--output", tmp_path / "out")
    assert code == 2
    assert "matches no file" in err and "nothing-*.parquet" in err
    assert not (tmp_path / "out").exists()


def test_file_that_is_not_parquet(tmp_path, capsys):
    good = tmp_path / "in" / "a.parquet"
    good.parent.mkdir()
    pq.write_table(synth.generate(100, seed=1), good)
    bad = tmp_path / "in" / "b.parquet"
    bad.write_text("msm_id,src_addr\n1,1.2.3.4\n")
    code, err = _run(capsys, "--input", tmp_path / "in" / "*.parquet", "--output", tmp_path / "out")
    assert code == 2
    assert str(bad) in err and "not a readable Parquet file" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_required_column(tmp_path, capsys):
    path = tmp_path / "x.parquet"
    pq.write_table(synth.generate(100, seed=1).drop_columns(["rtt"]), path)
    code, err = _run(capsys, "--input", path, "--output", tmp_path / "out")
    assert code == 2
    assert str(path) in err and "'rtt'" in err and "missing" in err


def test_column_of_wrong_type(tmp_path, capsys):
    table = synth.generate(100, seed=1)
    table = table.set_column(table.schema.get_field_index("rtt"), "rtt", table["rtt"].cast(pa.string()))
    path = tmp_path / "x.parquet"
    pq.write_table(table, path)
    code, err = _run(capsys, "--input", path, "--output", tmp_path / "out")
    assert code == 2
    assert str(path) in err and "'rtt'" in err and "string" in err


def test_corrupt_row_group_fails_the_job_without_manifest(tmp_path, capsys):
    path = tmp_path / "x.parquet"
    _scribbled_parquet(path)
    code, err = _run(capsys, "--input", path, "--output", tmp_path / "out")
    if code == 0:
        pytest.skip("the scribble landed where Parquet could not notice it")  # pragma: no cover
    assert code == 1
    assert "pretokenize failed" in err and "no manifest was written" in err
    assert not (tmp_path / "out" / "manifest.json").exists()
    _check_failure_report(err, path, tmp_path / "out")


def test_corrupt_row_group_in_process_fails_the_same_way(tmp_path, capsys):
    # --in_process: the stages run in this process without Beam.
    path = tmp_path / "x.parquet"
    _scribbled_parquet(path)
    code = pretokenize.run(["--input", str(path), "--output", str(tmp_path / "out"), "--in_process"])
    err = capsys.readouterr().err
    assert "in this process, without Beam (--in_process)" in err
    assert code == 1
    _check_failure_report(err, path, tmp_path / "out", note="the traceback: ")


def _check_failure_report(err: str, path, out, note: str = "Beam's log, with the workers' tracebacks: ") -> None:
    """One error line naming the file, no traceback on the terminal; the traceback is in the log, the
    only file left (no lock, no scratch files)."""
    log = out / "_tmp" / "pipeline.log"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "[while running" not in errors[0], err
    assert "Traceback" not in err and "WARNING" not in err and "ERROR" not in err, err
    assert f"no manifest was written; {out} does not hold a dataset" in err
    assert f"{note}{log}" in err
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and str(path) in text
    assert os.listdir(out) == ["_tmp"] and os.listdir(out / "_tmp") == ["pipeline.log"]


def _scribbled_parquet(path) -> None:
    """20,000 rows in 4 row groups, with the middle of the file (column data) overwritten, footer intact."""
    pq.write_table(synth.generate(20_000, seed=1), path, row_group_size=5_000, compression="none")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = np.random.default_rng(3).bytes(4000)
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_failure_in_worker_processes_prints_one_line_and_logs_the_traceback(tmp_path):
    # The default runner mode (worker processes): their tracebacks and start-up notices go to the log.
    path = tmp_path / "x.parquet"
    _scribbled_parquet(path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.pretokenize", "--input", str(path), "--output", str(out), "--direct_num_workers=2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "pretokenize failed" in proc.stderr and "cannot be read" in proc.stderr
    assert proc.stderr.splitlines()[0].startswith("pretokenize: 20,000 rows")
    assert len(proc.stderr.splitlines()) == 4, proc.stderr  # start line, error, no manifest, log path
    _check_failure_report(proc.stderr, path, out)


@pytest.mark.slow
def test_sample_run_prints_no_beam_noise(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.pretokenize", "--output", str(out), "--direct_num_workers=2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "apitools" not in proc.stderr and "Logging handler" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[0].startswith("pretokenize: 120,000 rows in 4 file(s)")
    assert not any(line.startswith(("WARNING", "INFO", "ERROR")) for line in proc.stderr.splitlines()), proc.stderr
    assert "fingerprint" in proc.stdout
    assert sorted(os.listdir(out)) == ["manifest.json", "rejected", "test", "train", "val"]  # no lock, no log


@pytest.mark.parametrize(
    "option,message",
    [
        (["--split", "80,20"], "--split"),
        (["--split", "0,50,50"], "--split"),
        (["--seq_len", "50"], "--seq_len"),
        (["--compression", "gzip"], "--compression"),
        (["--bucket_rows", "0"], "--bucket_rows"),
    ],
)
def test_bad_options(tmp_path, capsys, sample_dir, option, message):
    code, err = _run(capsys, "--input", sample_dir, "--output", tmp_path / "out", *option)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_foreign_output_directory_is_refused(tmp_path, capsys, sample_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = _run(capsys, "--input", sample_dir, "--output", out)
    assert code == 2 and "not a ping-llm dataset" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_output_that_is_a_file_is_refused(tmp_path, capsys, sample_dir):
    out = tmp_path / "out"
    out.write_text("mine")
    code, err = _run(capsys, "--input", sample_dir, "--output", out)
    assert code == 2 and err == f"error: --output {out} exists and is not a directory\n"
    assert out.read_text() == "mine"


def test_output_locked_by_a_live_writer_is_refused_untouched(tmp_path, capsys, sample_dir):
    out = tmp_path / "out"
    (out / "_tmp").mkdir(parents=True)
    (out / "_tmp" / "bucket").write_text("the other run's")
    lock = json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "started": "2026-01-01T00:00:00+00:00"})
    (out / "_writer.lock").write_text(lock)
    code, err = _run(capsys, "--input", sample_dir, "--output", out, "--overwrite")
    assert code == 2 and f"{out} is being written by another run (pid {os.getppid()} on" in err
    assert sorted(os.listdir(out)) == ["_tmp", "_writer.lock"] and (out / "_writer.lock").read_text() == lock
    assert (out / "_tmp" / "bucket").read_text() == "the other run's"


def test_all_rows_rejected_is_an_error(tmp_path, capsys):
    table = synth.generate(200, seed=1)
    table = table.set_column(table.schema.get_field_index("src_addr"), "src_addr", pa.array([""] * 200))
    path = tmp_path / "x.parquet"
    pq.write_table(table, path)
    out = tmp_path / "out"
    code, err = _run(capsys, "--input", path, "--output", out)
    assert code == 1
    assert "error: no row could be encoded: all 200 rows were rejected (empty_src_addr 200)" in err
    assert f"the rows and their reasons are in {out / 'rejected'}; no manifest was written" in err
    # No dataset: no manifest, no split folder, no scratch; the rejected rows are kept to be read.
    assert sorted(os.listdir(out)) == ["rejected"]
    rejected = pq.read_table(out / "rejected")
    assert rejected.num_rows == 200 and set(rejected["reason"].to_pylist()) == {"empty_src_addr"}
    assert rejected["source_row"].to_pylist() == list(range(200))
    # A rerun fails the same way (the output is not taken for a dataset), and a good input then replaces it.
    code, err = _run(capsys, "--input", path, "--output", out)
    assert code == 1 and "no row could be encoded" in err and sorted(os.listdir(out)) == ["rejected"]
    good = tmp_path / "good.parquet"
    pq.write_table(synth.generate(200, seed=2), good)
    code, _ = _run(capsys, "--input", good, "--output", out)
    assert code == 0 and os.path.isfile(out / "manifest.json")


@pytest.mark.slow
def test_killed_run_leaves_no_manifest_and_a_rerun_is_correct(tmp_path, capsys):
    data = tmp_path / "in"
    write_shards(synth.generate(400_000, seed=11), str(data), shards=4, row_group_size=10_000)
    reference = tmp_path / "reference"
    assert pretokenize.run(["--input", str(data), "--output", str(reference), IN_MEMORY]) == 0

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "beam_pipelines.pretokenize", "--input", str(data), "--output", str(out), IN_MEMORY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    progress = out / "_tmp" / "progress"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (progress.is_dir() and len(os.listdir(progress)) >= 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert progress.is_dir(), "the job never started"
    assert not (out / "manifest.json").exists()
    assert (out / "_writer.lock").exists()  # a killed run cannot remove its lock

    # Rerun the same command: it takes over the dead run's lock, notices the leftovers, starts over, and
    # gets the same bytes.
    capsys.readouterr()
    assert pretokenize.run(["--input", str(data), "--output", str(out), IN_MEMORY]) == 0
    assert f"note: took over the writer lock of a run that is gone (pid {proc.pid} on " in capsys.readouterr().err
    assert tree_digest(out) == tree_digest(reference)


@pytest.mark.slow
def test_dask_runner_gives_byte_identical_output(tmp_path, sample_dir):
    distributed = pytest.importorskip("distributed")  # the 'dask' extra; installed by the 'test' extra
    reference = tmp_path / "direct"
    assert pretokenize.run(["--input", str(sample_dir), "--output", str(reference), IN_MEMORY]) == 0
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        out = tmp_path / "dask"
        code = pretokenize.run(
            ["--input", str(sample_dir), "--output", str(out), "--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
        )
        assert code == 0
        with pytest.raises(ValueError, match="No clients found"):  # the job closed the runner's client
            distributed.default_client()
    assert tree_digest(out) == tree_digest(reference)
    assert load_manifest(out)["rows"]["read"] == 120_000


@pytest.mark.slow
def test_second_writer_on_the_same_output_is_refused_at_once(tmp_path, sample_dir, capsys):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "beam_pipelines.pretokenize", "--input", str(sample_dir), "--output", str(out), IN_MEMORY]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / "_writer.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not lock.exists() and first.poll() is None:
            time.sleep(0.02)
        assert lock.exists(), "the first run never took the lock"

        started = time.monotonic()
        code, err = _run(capsys, "--input", sample_dir, "--output", out)
        assert first.poll() is None, "the first run ended before the second was refused; the test proved nothing"
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert code == 2 and time.monotonic() - started < 10
    assert err.startswith(f"error: {out} is being written by another run (pid {first.pid} on "), err
    assert len(err.splitlines()) == 1, err

    # The first run was not disturbed: it completes, and its dataset verifies against its manifest.
    assert first.returncode == 0, stderr
    manifest = load_manifest(out)
    listed = [f for split in manifest["splits"].values() for f in split["files"]]
    for entry in listed:
        path = out / entry["path"]
        assert path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]
    found = {os.path.relpath(os.path.join(root, n), out) for root, _, names in os.walk(out) for n in names}
    assert found == {"manifest.json", *(f["path"] for f in listed), *manifest["rejected"]["files"]}  # no lock left
    assert manifest["rows"]["read"] == 120_000 and "fingerprint" in stdout
