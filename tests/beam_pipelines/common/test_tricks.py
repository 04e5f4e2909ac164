"""The process tricks (beam_pipelines/common/tricks.py): what each does, its switch, and one canary test per
private API of Beam, CPython or glibc it relies on (``test_canary_*``). A canary that fails after an upgrade
names the trick to mend; meanwhile the trick's switch (``PING_LLM_PLAIN_...=1``) turns it off."""

from __future__ import annotations

import atexit
import ctypes
import inspect
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.worker import sdk_worker_main
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from beam_pipelines.common import joblog, options, tricks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LINUX = sys.platform.startswith("linux")


def _run(args: list[str], tmp_path, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if not k.endswith("_API_SERVICE_DESCRIPTOR") and k not in tricks.SWITCHES
    }
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**clean, "PYTHONPATH": REPO, "TMPDIR": str(tmp_path), **(env or {})},
    )  # fmt: skip


def _python(code: str, tmp_path, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run(["-c", textwrap.dedent(code)], tmp_path, env)


def test_a_switch_is_on_when_set_to_anything_but_0(monkeypatch):
    for value, off in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(tricks.PLAIN_EXIT, value)
        assert tricks.plain(tricks.PLAIN_EXIT) is off
    monkeypatch.delenv(tricks.PLAIN_EXIT)
    assert not tricks.plain(tricks.PLAIN_EXIT)


# --- exit_now: atexit._run_exitfuncs, then os._exit ----------------------------------------------------------

_TEARDOWN_PROBE = """
    import atexit, sys
    from beam_pipelines.common.tricks import exit_now

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


def test_exit_now_runs_exit_handlers_flushes_and_skips_the_teardown(tmp_path):
    done = _python(_TEARDOWN_PROBE, tmp_path)
    assert done.returncode == 3
    assert (done.stdout, done.stderr) == ("buffered, no newline", "to stderr")
    assert sorted(os.listdir(tmp_path)) == ["atexit"]


def test_plain_exit_switch_exits_normally_with_the_teardown(tmp_path):
    done = _python(_TEARDOWN_PROBE, tmp_path, {tricks.PLAIN_EXIT: "1"})
    assert done.returncode == 3 and (done.stdout, done.stderr) == ("buffered, no newline", "to stderr")
    assert sorted(os.listdir(tmp_path)) == ["atexit", "teardown"]


def test_canary_atexit_run_exitfuncs_runs_the_registered_handlers_once(tmp_path):
    """CPython's ``atexit._run_exitfuncs`` (private): runs every handler, last registered first, and clears them."""
    assert callable(atexit._run_exitfuncs)
    code = """
        import atexit
        atexit.register(print, "first")
        atexit.register(print, "second")
        atexit._run_exitfuncs()
        print("cleared", atexit._ncallbacks())
    """
    assert _python(code, tmp_path).stdout.split("\n") == ["second", "first", "cleared 0", ""]


# --- keep_freed_memory: glibc's mallopt ----------------------------------------------------------------------

# 20 times: allocates five 8 MiB arrays (touching every page) and frees them all, as a stage does per batch;
# prints whether the settings took effect and the minor page faults this took.
_FAULTS_PROBE = """
import resource
import numpy as np
from beam_pipelines.common.tricks import keep_freed_memory
kept = keep_freed_memory()
np.ones(1 << 21)  # warm up numpy
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    arrays = [np.ones(1 << 20) for _ in range(5)]  # 8 MiB each
    del arrays
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(tmp_path, switch: str) -> tuple[str, int]:
    kept, faults = _python(_FAULTS_PROBE, tmp_path, {tricks.PLAIN_MALLOC: switch}).stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not LINUX, reason="mallopt is glibc's")
def test_freed_arrays_are_reused_without_page_faults_unless_switched_off(tmp_path):
    pages = (40 << 20) // 4096  # one round's arrays
    kept, faults = _faults(tmp_path, "0")
    assert kept == "True" and faults < pages  # faulted in once, then reused (1.5k measured)
    kept, faults = _faults(tmp_path, "1")
    # glibc hands freed blocks back to the kernel, and they are faulted in again (41k faults measured)
    assert kept == "False" and faults > 2 * pages


def test_keep_freed_memory_applies_once_and_reports_success():
    first = tricks.keep_freed_memory()
    assert first is tricks.keep_freed_memory()
    assert first is (LINUX and not tricks.plain(tricks.PLAIN_MALLOC))


@pytest.mark.skipif(not LINUX, reason="mallopt is glibc's")
def test_canary_glibc_mallopt_takes_the_three_parameters():
    """glibc's ``mallopt`` takes the parameter numbers of its malloc.h (-1 trim, -2 top pad, -3 mmap threshold)
    with these values; that they act is checked by the page faults above."""
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    for param, value in ((-3, tricks.MMAP_THRESHOLD), (-1, tricks.TRIM_THRESHOLD), (-2, tricks.TOP_PAD)):
        assert mallopt(param, value) == 1, param


# --- the LocalRunner's engine: Beam's FnApiRunner and SDK worker ---------------------------------------------


def test_canary_fn_api_runner_takes_an_environment_and_provision_info():
    """``fn_runner.FnApiRunner(default_environment=, provision_info=)`` and ``ExtendedProvisionInfo(ProvisionInfo)``."""
    params = inspect.signature(fn_runner.FnApiRunner).parameters
    assert {"default_environment", "provision_info"} <= set(params)
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo())
    assert isinstance(info.provision_info, beam_provision_api_pb2.ProvisionInfo)


def test_canary_encode_pipeline_options_gives_the_options_a_worker_reads():
    """``JobServiceHandle.encode_pipeline_options``: the worker reads its log level from what this encodes."""
    encoded = JobServiceHandle.encode_pipeline_options({"default_sdk_harness_log_level": "ERROR", "unset": None})
    assert encoded["beam:option:default_sdk_harness_log_level:v1"] == "ERROR"
    beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)  # the type ProvisionInfo takes


def test_canary_fn_api_runner_keeps_the_given_environment_when_the_mode_is_unset(monkeypatch):
    """``FnApiRunner.run_pipeline`` replaces the environment for ``multi_processing`` (with Beam's own worker
    command) but keeps the one it was given when ``direct_running_mode`` is None: how the LocalRunner's
    workers run ``tricks.main`` with their stderr in the log. Stopped before any worker starts."""
    seen = []
    monkeypatch.setattr(
        fn_runner.FnApiRunner, "run_via_runner_api", lambda self, proto, opts: seen.append(self._default_environment)
    )
    ours = SubprocessSDKEnvironment.from_command_string(command_string="our worker")
    assert ours.command_string == "our worker"
    for mode, expected in ((None, "our worker"), ("multi_processing", "apache_beam.runners.worker.sdk_worker_main")):
        opts = PipelineOptions(["--direct_num_workers=2"])
        opts.view_as(DirectOptions).direct_running_mode = mode
        p = beam.Pipeline(options=opts)
        p | beam.Create([1])
        fn_runner.FnApiRunner(default_environment=ours).run_pipeline(p, opts)
        assert expected in seen[-1].command_string, mode


def test_canary_sdk_worker_main_reads_the_runner_environment(tmp_path):
    """``sdk_worker_main.main(argv)``: what ``tricks.main`` runs; without the runner's environment it raises,
    and the worker exits with its traceback and a failure status (not turned into a 0)."""
    assert list(inspect.signature(sdk_worker_main.main).parameters) == ["unused_argv"]
    done = _run(["-m", "beam_pipelines.common.tricks"], tmp_path)
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "CONTROL_API_SERVICE_DESCRIPTOR" in done.stderr


def test_plain_runner_switch_picks_beams_direct_runner_in_the_same_mode(monkeypatch):
    monkeypatch.setenv(tricks.PLAIN_RUNNER, "1")
    view = options.beam_options([]).get_all_options()
    assert view["runner"] == "DirectRunner"
    assert view["direct_running_mode"] == "multi_processing" and view["direct_num_workers"] == 0
    monkeypatch.setenv(tricks.PLAIN_RUNNER, "0")
    assert options.beam_options([]).get_all_options()["runner"] == options.LOCAL_RUNNER


def _main_module(_):
    return sys.modules["__main__"].__spec__.name


def _write_lines(lines, path):
    with open(path, "w") as f:
        f.write("\n".join(lines))


@pytest.mark.slow
def test_multi_process_workers_run_tricks_main_with_stderr_in_the_log(tmp_path):
    log = tmp_path / "pipeline.log"
    out = tmp_path / "names.txt"
    pipeline = beam.Pipeline(options=options.beam_options(["--direct_num_workers=2"]))
    names = pipeline | beam.Create(range(4)) | beam.Reshuffle() | beam.Map(_main_module)
    names | beam.combiners.ToList() | beam.Map(_write_lines, str(out))
    options.run_to_completion(pipeline, worker_log=str(log))
    assert set(out.read_text().split("\n")) == {"beam_pipelines.common.tricks"}
    assert "Logging handler created" in log.read_text()  # each worker's own stderr went to the log


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
    assert tricks.local_worker_count([]) == cores
    assert tricks.local_worker_count(["--direct_num_workers=3"]) == 3
    assert tricks.local_worker_count(["--direct_num_workers", "2", "--direct_running_mode=multi_processing"]) == 2
    assert tricks.local_worker_count(["--direct_num_workers=0"]) == cores
    for args in (["--direct_running_mode=in_memory"], ["--runner=DaskRunner"], ["--runner", "DirectRunner"],
                 ["--direct_running_mode", "multi_threading"], ["--direct_num_workers=two"]):  # fmt: skip
        assert tricks.local_worker_count(args) is None, args


def test_warm_workers_only_where_the_runner_will_use_worker_processes_on_linux(tmp_path, monkeypatch):
    log = str(tmp_path / "log")
    assert tricks.start_warm_workers(["--direct_running_mode=in_memory"], log) is None
    monkeypatch.setattr(sys, "platform", "darwin")
    assert tricks.start_warm_workers(["--direct_num_workers=2"], log) is None
    monkeypatch.setattr(sys, "platform", "linux")
    for switch in (tricks.PLAIN_WORKERS, tricks.PLAIN_RUNNER):  # no warm workers, or no runner to claim them
        monkeypatch.setenv(switch, "1")
        assert tricks.start_warm_workers(["--direct_num_workers=2"], log) is None
        monkeypatch.delenv(switch)
    warm = tricks.start_warm_workers(["--direct_num_workers=2"], log)
    try:
        assert warm is not None and len(warm._processes) == 2
    finally:
        warm.close()


@pytest.mark.slow
@pytest.mark.parametrize("warm_count", [2, 1])
def test_the_runner_claims_warm_workers_and_starts_the_rest(tmp_path, warm_count):
    """Two workers asked for: each runs in a warm worker while there is one (``--warm`` in its arguments);
    with one warm worker, the second claim finds none and runs the worker itself."""
    log = tmp_path / "pipeline.log"
    out = tmp_path / "flags.txt"
    warm = tricks.WarmWorkers(warm_count, str(log), ["colorsys"])  # a module nothing else imports
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
    log = tmp_path / "pipeline.log"
    warm = tricks.WarmWorkers(2, str(log))
    try:
        with pytest.raises(Exception) as info:
            joblog.run_pipeline(
                ["--direct_num_workers=2"],
                lambda p: p | beam.Create(range(5)) | beam.Map(_fails_on_three),
                str(log),
                warm,
            )
    finally:
        warm.close()
    assert joblog.pipeline_error(info.value).endswith("input 3: unreadable")
    assert "Logging handler created" in log.read_text()  # the warm workers' own stderr went to the log
    assert all(p.poll() is not None for _, p in warm._processes)


def test_warm_workers_never_claimed_end_at_close(tmp_path):
    warm = tricks.WarmWorkers(2, str(tmp_path / "log"))
    processes = [p for _, p in warm._processes]
    assert all(p.poll() is None for p in processes)
    warm.close()
    assert all(p.poll() is not None for p in processes)
    assert not os.path.exists(warm.directory)


def test_warm_workers_end_with_a_launcher_that_was_killed(tmp_path):
    """A launcher killed before it could close its warm workers does not leave them waiting forever."""
    code = """
        import os, signal
        from beam_pipelines.common.tricks import WarmWorkers
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
