"""Ending a finished process at once: the jobs' launchers and the LocalRunner's worker processes (Beam's SDK worker, then no teardown)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import apache_beam as beam
import pytest

from beam_pipelines.common import joblog, worker_main
from beam_pipelines.common.lifecycle import LOG_NAME

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_SERVICE_DESCRIPTOR")}
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**env, "PYTHONPATH": REPO, "TMPDIR": str(tmp_path)},  # what a killed process leaves stays here
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
    log = tmp_path / LOG_NAME
    out = tmp_path / "names.txt"

    def build_to_file(p):
        names = p | beam.Create(range(4)) | beam.Reshuffle() | beam.Map(_main_module)
        names | beam.combiners.ToList() | beam.Map(_write_lines, str(out))

    joblog.run_pipeline(["--direct_num_workers=2"], build_to_file, str(log))
    assert set(out.read_text().split("\n")) == {"beam_pipelines.common.worker_main"}


# --- warm workers: started ahead of the runner, claimed by its worker command -----------------------------


def _argv_flag(_):
    """How this worker was started, and whether it had imported the warm workers' extra module."""
    return (sys.argv[1] if len(sys.argv) > 1 else "") + (" colorsys" if "colorsys" in sys.modules else "")


def _fails_on_three(x):
    if x == 3:
        raise ValueError("input 3: unreadable")
    return x


def test_local_worker_count_reads_the_runner_options_without_beam():
    cores = multiprocessing.cpu_count()
    assert worker_main.local_worker_count([]) == cores
    assert worker_main.local_worker_count(["--direct_num_workers=3"]) == 3
    assert worker_main.local_worker_count(["--direct_num_workers", "2", "--direct_running_mode=multi_processing"]) == 2
    assert worker_main.local_worker_count(["--direct_num_workers=0"]) == cores
    for args in (["--direct_running_mode=in_memory"], ["--runner=DaskRunner"], ["--runner", "DirectRunner"],
                 ["--direct_running_mode", "multi_threading"], ["--direct_num_workers=two"]):  # fmt: skip
        assert worker_main.local_worker_count(args) is None, args


def test_warm_workers_only_where_the_runner_will_use_worker_processes_on_linux(tmp_path, monkeypatch):
    log = str(tmp_path / "log")
    assert worker_main.start_warm_workers(["--direct_running_mode=in_memory"], log) is None
    monkeypatch.setattr(sys, "platform", "darwin")
    assert worker_main.start_warm_workers(["--direct_num_workers=2"], log) is None
    monkeypatch.setattr(sys, "platform", "linux")
    warm = worker_main.start_warm_workers(["--direct_num_workers=2"], log)
    try:
        assert warm is not None and len(warm._processes) == 2
    finally:
        warm.close()


@pytest.mark.slow
@pytest.mark.parametrize("warm_count", [2, 1])
def test_the_runner_claims_warm_workers_and_starts_the_rest(tmp_path, warm_count):
    """Two workers asked for: each runs in a warm worker while there is one (``--warm`` in its arguments);
    with one warm worker, the second claim finds none and runs the worker itself."""
    log = tmp_path / LOG_NAME
    out = tmp_path / "flags.txt"
    warm = worker_main.WarmWorkers(warm_count, str(log), ["colorsys"])  # a module nothing else imports
    try:

        def build(p):
            flags = p | beam.Create(range(40)) | beam.Reshuffle() | beam.Map(_argv_flag)
            flags | beam.combiners.ToList() | beam.Map(_write_lines, str(out))

        joblog.run_pipeline(["--direct_num_workers=2"], build, str(log), warm)
    finally:
        warm.close()
    flags = out.read_text().split("\n")
    assert len(flags) == 40 and set(flags) <= {"--warm colorsys", "--claim"}
    assert "--warm colorsys" in flags
    if warm_count == 2:
        assert "--claim" not in flags  # both workers were warm ones
    else:
        assert "--claim" in flags  # the second claim found none waiting and ran the worker itself
    assert not os.path.exists(warm.directory)


@pytest.mark.slow
def test_a_failing_pipeline_on_warm_workers_reports_the_error_and_ends_them(tmp_path):
    log = tmp_path / LOG_NAME
    warm = worker_main.WarmWorkers(2, str(log))
    try:
        with pytest.raises(Exception) as info:
            joblog.run_pipeline(
                ["--direct_num_workers=2"], lambda p: p | beam.Create(range(5)) | beam.Map(_fails_on_three), str(log), warm
            )
    finally:
        warm.close()
    assert joblog.pipeline_error(info.value).endswith("input 3: unreadable")
    assert "Logging handler created" in log.read_text()  # the warm workers' own stderr went to the log
    assert all(p.poll() is not None for _, p in warm._processes)


def test_warm_workers_never_claimed_end_at_close(tmp_path):
    warm = worker_main.WarmWorkers(2, str(tmp_path / "log"))
    processes = [p for _, p in warm._processes]
    assert all(p.poll() is None for p in processes)
    warm.close()
    assert all(p.poll() is not None for p in processes)
    assert not os.path.exists(warm.directory)


def test_warm_workers_end_with_a_launcher_that_was_killed(tmp_path):
    """A launcher killed before it could close its warm workers does not leave them waiting forever."""
    code = f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        from beam_pipelines.common.worker_main import WarmWorkers
        warm = WarmWorkers(2, "log")
        print(" ".join(str(p.pid) for _, p in warm._processes), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    done = _python(code, tmp_path)
    assert done.returncode == -signal.SIGKILL
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
