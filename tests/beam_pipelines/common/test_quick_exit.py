"""Ending a finished process at once: the jobs' launchers and the LocalRunner's worker processes (Beam's SDK worker, then no teardown)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import apache_beam as beam
import pytest

from beam_pipelines.common import joblog

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_SERVICE_DESCRIPTOR")}
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**env, "PYTHONPATH": REPO},
    )  # fmt: skip


def _python(code: str, tmp_path) -> subprocess.CompletedProcess:
    return _run(["-c", textwrap.dedent(code)], tmp_path)


def test_exit_now_runs_exit_handlers_flushes_and_skips_the_teardown(tmp_path):
    code = """
        import atexit, sys
        from beam_pipelines.common.quick_exit import exit_now

        class Teardown:
            def __del__(self, _open=open):  # runs in the interpreter's teardown, which exit_now skips
                _open("teardown", "w").close()

        kept = Teardown()
        atexit.register(lambda: open("atexit", "w").close())
        sys.stdout.write("buffered, no newline")
        sys.stderr.write("to stderr")
        exit_now(3)
        open("after", "w").close()
    """
    done = _python(code, tmp_path)
    assert done.returncode == 3
    assert (done.stdout, done.stderr) == ("buffered, no newline", "to stderr")
    assert sorted(os.listdir(tmp_path)) == ["atexit"]
    # The same object without exit_now: the teardown does run (so the check above can fail).
    plain = _python("class T:\n    def __del__(self, o=open): o('teardown', 'w').close()\nkept = T()\n", tmp_path)
    assert plain.returncode == 0 and (tmp_path / "teardown").exists()


def test_a_worker_that_fails_exits_with_its_traceback_and_a_failure_status(tmp_path):
    """Without the runner's environment Beam's worker main raises: the failure is not turned into a 0."""
    done = _run(["-m", "beam_pipelines.common.worker_main"], tmp_path)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "CONTROL_API_SERVICE_DESCRIPTOR" in done.stderr


def _main_module(_):
    return sys.modules["__main__"].__spec__.name


def _write_lines(lines, path):
    with open(path, "w") as f:
        f.write("\n".join(lines))


@pytest.mark.slow
def test_multi_process_workers_run_worker_main(tmp_path):
    log = tmp_path / joblog.LOG_NAME
    out = tmp_path / "names.txt"

    def build_to_file(p):
        names = p | beam.Create(range(4)) | beam.Reshuffle() | beam.Map(_main_module)
        names | beam.combiners.ToList() | beam.Map(_write_lines, str(out))

    joblog.run_pipeline(["--direct_num_workers=2"], build_to_file, str(log))
    assert set(out.read_text().split("\n")) == {"beam_pipelines.common.worker_main"}
