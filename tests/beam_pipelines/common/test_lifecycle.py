"""The job lifecycle every job shares: scratch folder, Beam's log, cleanup and the failure report."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from beam_pipelines.common import lifecycle
from beam_pipelines.common.errors import InputError, RunError, UsageError
from beam_pipelines.common.lifecycle import LOG_NAME, JobContext, JobRun


def test_keep_only_log(tmp_path):
    scratch = tmp_path / "_tmp"
    (scratch / "buckets" / "00000").mkdir(parents=True)
    (scratch / "progress.json").write_text("{}")
    (scratch / LOG_NAME).write_text("traceback")
    lifecycle.keep_only_log(str(scratch), str(scratch / LOG_NAME))
    assert os.listdir(scratch) == [LOG_NAME]
    assert lifecycle.log_notes(str(scratch / LOG_NAME)) == (
        f"Beam's log, with the workers' tracebacks: {scratch / LOG_NAME}",
    )
    os.remove(scratch / LOG_NAME)
    (scratch / "left").write_text("x")
    lifecycle.keep_only_log(str(scratch), str(scratch / LOG_NAME))  # no log: the scratch area goes
    assert not scratch.exists() and lifecycle.log_notes(str(scratch / LOG_NAME)) == ()


def test_scratch_under_a_temp_location_is_named_by_job_and_run():
    assert lifecycle.scratch_under("", "stats") == ""
    first, second = (lifecycle.scratch_under("s3://bucket/tmp/", "pretokenize") for _ in range(2))
    assert re.fullmatch(r"s3://bucket/tmp/pretokenize-[0-9a-f]{12}", first) and first != second


def test_job_context_scratch_folder_and_subclass_fields():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Ctx(JobContext):
        TMP_DIR = "_tmp_x"
        rows: int

    assert Ctx(output="out", rows=1).tmp == os.path.join("out", "_tmp_x")
    assert Ctx(output="out", rows=1, scratch="/t/x-1").tmp == "/t/x-1"
    with pytest.raises(TypeError):
        Ctx(output="out")  # the job's own fields stay required


def test_local_scratch_keeps_the_log_inside_and_finished_removes_both(tmp_path):
    scratch = tmp_path / "out" / "_tmp"
    (scratch / "stale").mkdir(parents=True)  # what a killed run left: gone at the start
    job = JobRun("pretokenize", str(scratch), separate_log=False)
    assert os.listdir(scratch) == [] and job.log == str(scratch / LOG_NAME)
    (scratch / LOG_NAME).write_text("log")
    job.finished()
    assert not scratch.exists()


def test_failure_keeps_only_the_log_and_reports_state_and_log(tmp_path, capsys):
    scratch = tmp_path / "_tmp"
    job = JobRun("ingest", str(scratch), separate_log=False)
    (scratch / "progress").mkdir()
    (scratch / LOG_NAME).write_text("Traceback ...")
    assert job.failed(RunError("ingest_atlas failed: boom"), "out does not hold a complete result") == 1
    assert os.listdir(scratch) == [LOG_NAME]
    assert capsys.readouterr().err.splitlines() == [
        "error: ingest_atlas failed: boom",
        "out does not hold a complete result",
        f"Beam's log, with the workers' tracebacks: {scratch / LOG_NAME}",
    ]


def test_scratch_under_a_temp_location_gets_a_log_folder_of_its_own(tmp_path, capsys):
    scratch = tmp_path / "temp" / "stats-0123456789ab"
    job = JobRun("stats", str(scratch), separate_log=True)
    log_dir = os.path.dirname(job.log)
    assert os.path.basename(log_dir).startswith("ping-llm-stats-log-") and not log_dir.startswith(str(scratch))
    with open(job.log, "w") as f:
        f.write("Beam said things")
    # Bad input found while running: exit 2, the scratch gone, the log kept where the note says.
    assert job.failed(InputError("a.parquet: row group 1: bad"), "no report was written to out") == 2
    assert not scratch.exists() and os.path.isfile(job.log)
    assert capsys.readouterr().err.splitlines()[-1] == f"Beam's log, with the workers' tracebacks: {job.log}"
    os.remove(job.log)
    os.rmdir(log_dir)


def test_a_failure_without_a_log_leaves_no_log_folder(tmp_path, capsys):
    job = JobRun("stats", str(tmp_path / "temp" / "stats-x"), separate_log=True)
    assert job.failed(RunError("stats failed: x"), "no report was written to out") == 1
    assert not os.path.exists(os.path.dirname(job.log))
    assert capsys.readouterr().err.splitlines() == ["error: stats failed: x", "no report was written to out"]


def test_a_failure_without_beam_writes_its_traceback_to_the_log(tmp_path, capsys):
    scratch = tmp_path / "_tmp"
    job = JobRun("pretokenize", str(scratch), separate_log=False)
    try:
        raise ValueError("bad bucket")
    except ValueError as exc:
        assert job.failed(RunError("pretokenize failed: bad bucket"), "no manifest was written", traceback_of=exc) == 1
    text = (scratch / LOG_NAME).read_text()
    assert text.startswith("The job failed:\nTraceback") and "ValueError: bad bucket" in text
    assert capsys.readouterr().err.splitlines()[-1] == f"the traceback: {scratch / LOG_NAME}"


def test_finished_with_a_separate_log_removes_scratch_and_log_folder(tmp_path):
    scratch = tmp_path / "temp" / "ingest-x"
    job = JobRun("ingest", str(scratch), separate_log=True)
    with open(job.log, "w") as f:
        f.write("quiet")
    job.finished()
    assert not scratch.exists() and not os.path.exists(os.path.dirname(job.log))


def test_remove_scratch_warns_instead_of_failing(tmp_path, capsys, monkeypatch):
    def refuse(path):
        raise OSError(f"{path}: access denied")

    monkeypatch.setattr(lifecycle.storage, "rmtree", refuse)
    lifecycle.remove_scratch("s3://b/tmp/x")
    assert capsys.readouterr().err == "warning: could not remove the scratch files under s3://b/tmp/x (s3://b/tmp/x: access denied)\n"


def _parse(argv):
    if argv == ["--help"]:
        raise SystemExit(0)
    if argv == ["--bad"]:
        raise UsageError("unrecognized option --bad (see --help)")
    return {"argv": argv}, []


@pytest.mark.parametrize(
    "argv, body_raises, code, err",
    [
        (["--help"], None, 0, ""),
        (["--bad"], None, 2, "error: unrecognized option --bad (see --help)\n"),
        (["x"], InputError("x: no such file"), 2, "error: x: no such file\n"),
        (["x"], None, 0, ""),
    ],
)
def test_run_job(argv, body_raises, code, err, capsys):
    def body(options, beam_args, started):
        assert options == {"argv": argv} and beam_args == [] and started > 0
        if body_raises:
            raise body_raises
        return 0

    assert lifecycle.run_job(argv, _parse, body) == code
    assert capsys.readouterr().err == err


def test_run_job_reports_only_the_errors_it_is_given():
    def body(options, beam_args, started):
        raise RunError("step 2 failed")

    with pytest.raises(RunError):
        lifecycle.run_job(["x"], _parse, body)
    assert lifecycle.run_job(["x"], _parse, body, errors=(UsageError, InputError, RunError)) == 1


def test_beam_storage_options_without_beam_options_imports_nothing():
    assert lifecycle.beam_storage_options([]) == ("", {})
    temp, fs = lifecycle.beam_storage_options(["--temp_location=s3://b/t", "--s3_endpoint_url=http://127.0.0.1:9"])
    assert temp == "s3://b/t" and fs == {"s3_endpoint_url": "http://127.0.0.1:9"}
