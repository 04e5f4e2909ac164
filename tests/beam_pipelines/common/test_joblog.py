"""A failed pipeline: one line for the terminal, Beam's logs and the traceback in the job's log file."""

from __future__ import annotations

import logging

import apache_beam as beam
import pytest

from beam_pipelines.common import joblog
from beam_pipelines.common.lifecycle import LOG_NAME
from beam_pipelines.common.errors import InputError

IN_MEMORY = "--direct_running_mode=in_memory"


@pytest.mark.parametrize(
    "text, line",
    [
        # A worker's traceback wrapped in the runner's RuntimeError: the last InputError line wins.
        (
            (
                "Traceback (most recent call last):\n  File x\nbeam_pipelines.common.errors.InputError: a.parquet: "
                "row group 2: cannot be read (bad) [while running 'Read/Encode']\n\nDuring handling...\nRuntimeError: x"
            ),
            "a.parquet: row group 2: cannot be read (bad)",
        ),
        ("tokenizer.SchemaError: column 'rtt': string, expected double", "column 'rtt': string, expected double"),
        ("...\nOSError: [Errno 28] No space left on device [while running 'W']", "[Errno 28] No space left on device"),
        ("RuntimeError: read 5 rows but the inputs hold 6", "read 5 rows but the inputs hold 6"),
        ("first line\nValueError: three is bad [while running 'Map(boom)']", "ValueError: three is bad"),
        ("OSError: [Errno 2] No such file or directory: '/x/y'", "[Errno 2] No such file or directory: '/x/y'"),
        ("['InputError: b.gz: cannot read gzip stream']", "b.gz: cannot read gzip stream"),
        ("[\"a 'b' c\"]", "a 'b' c"),
        ("KeyError: \"'a' and 'b'\"", "KeyError: \"'a' and 'b'\""),
        ("", "KeyError"),
    ],
)
def test_pipeline_error_is_the_useful_line(text, line):
    exc = KeyError() if not text else RuntimeError(text)
    assert joblog.pipeline_error(exc) == line


def test_beam_records_go_to_the_log_not_to_stderr(tmp_path):
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root = logging.getLogger()
    collect = Collect()
    root.addHandler(collect)
    try:
        with joblog.beam_logs_to(str(tmp_path / "x.log")):
            logging.getLogger("apache_beam.runners.worker").error("worker says boom")
            logging.getLogger("somebody.else").error("not Beam's")
        logging.getLogger("apache_beam.runners.worker").error("after the block")
    finally:
        root.removeHandler(collect)
    text = (tmp_path / "x.log").read_text()
    assert "worker says boom" in text and "not Beam's" not in text and "after the block" not in text
    assert seen == ["not Beam's", "after the block"]
    assert logging.getLogger("apache_beam").propagate and not logging.getLogger("apache_beam").handlers


def _fails(x):
    if x == 3:
        raise InputError(f"input {x}: unreadable")
    return x


@pytest.mark.slow
def test_run_pipeline_logs_the_traceback_of_a_failure(tmp_path, capsys):
    log = tmp_path / LOG_NAME
    with pytest.raises(Exception) as info:
        joblog.run_pipeline([IN_MEMORY], lambda p: p | beam.Create(range(5)) | beam.Map(_fails), str(log))
    assert joblog.pipeline_error(info.value) == "input 3: unreadable"
    text = log.read_text()
    assert "The pipeline failed:" in text and "Traceback (most recent call last)" in text and "input 3" in text
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_run_pipeline_success_leaves_the_log_quiet(tmp_path):
    log = tmp_path / LOG_NAME
    joblog.run_pipeline([IN_MEMORY], lambda p: p | beam.Create([1, 2]) | beam.Map(lambda x: x), str(log))
    assert "Traceback" not in log.read_text()


@pytest.mark.slow
def test_worker_processes_write_their_stderr_to_the_log(tmp_path, capfd):
    log = tmp_path / LOG_NAME
    with pytest.raises(Exception) as info:
        joblog.run_pipeline(
            ["--direct_num_workers=2"], lambda p: p | beam.Create(range(5)) | beam.Map(_fails), str(log)
        )
    assert joblog.pipeline_error(info.value) == "input 3: unreadable"
    err = capfd.readouterr().err  # the file descriptor: what worker processes would print on the terminal
    assert "apitools" not in err and "Logging handler" not in err and "Traceback" not in err, err
    text = log.read_text()
    assert "Logging handler created" in text and "input 3: unreadable" in text  # the workers' own stderr
