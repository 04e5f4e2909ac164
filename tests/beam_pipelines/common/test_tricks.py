"""The process tricks (beam_pipelines/common/tricks.py): what each does, its switch, and one canary test per
private API of Beam, CPython or glibc it relies on (``test_canary_*``). A canary that fails after an upgrade
names the trick to mend; meanwhile the trick's switch (``PING_LLM_PLAIN_...=1``) turns it off."""

from __future__ import annotations

import atexit
import ctypes
import inspect
import os
import subprocess
import sys
import textwrap

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.worker import sdk_worker_main
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from beam_pipelines.common import options, tricks

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


# --- keep_freed_memory_for_xla: mmap off and one arena, for XLA's large blocks ---------------------------------

# ROUNDS times, in each of two threads (XLA's pool allocates from its threads): two 64 MiB arrays, larger than
# the largest mmap threshold, every page touched, then freed. Applies SETUP first (a trick or an entry point),
# prints whether keep_freed_memory_for_xla took effect and the minor page faults the rounds took.
_XLA_FAULTS_PROBE = """
import resource, sys, threading
import numpy as np
from beam_pipelines.common import tricks
{setup}
np.ones(1 << 21)  # warm up numpy

def rounds():
    for _ in range({rounds}):
        arrays = [np.ones(1 << 23) for _ in range(2)]  # 64 MiB each
        del arrays

before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=rounds) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(tricks.keep_freed_memory_for_xla.cache_info().currsize == 1 and tricks.keep_freed_memory_for_xla(),
      resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _xla_faults(tmp_path, setup: str, switch: str = "0", rounds: int = 40) -> tuple[str, int]:
    probe = _XLA_FAULTS_PROBE.format(setup=setup, rounds=rounds)
    result = _python(probe, tmp_path, {tricks.PLAIN_MALLOC: switch})
    assert result.returncode == 0, result.stderr[-3000:]
    kept, faults = result.stdout.split()[-2:]
    return kept, int(faults)


@pytest.mark.slow  # four fresh interpreters, 10 GiB of pages written
@pytest.mark.skipif(not LINUX, reason="mallopt is glibc's")
def test_xla_sized_blocks_are_reused_without_page_faults_unless_switched_off(tmp_path):
    kept, faults = _xla_faults(tmp_path, "tricks.keep_freed_memory_for_xla()")
    assert kept == "True"
    # The same rounds with the switch set, and with keep_freed_memory alone (the jobs' setting, whose mmap
    # threshold stops at 32 MiB): glibc maps every 64 MiB block afresh, and its pages fault in every round
    # (measured: 2.2k faults with the trick, 44.6k with the switch set and 45.7k with keep_freed_memory alone).
    off_kept, off = _xla_faults(tmp_path, "tricks.keep_freed_memory_for_xla()", switch="1")
    jobs_kept, jobs = _xla_faults(tmp_path, "tricks.keep_freed_memory()")
    assert off_kept == "False" and jobs_kept == "False"
    assert off > 5 * faults and jobs > 5 * faults, (faults, off, jobs)
    _, fewer = _xla_faults(tmp_path, "tricks.keep_freed_memory_for_xla()", rounds=4)
    assert faults < 2 * fewer  # reused: ten times the rounds, not ten times the faults


@pytest.mark.slow  # three fresh interpreters that import the trainer (jax)
@pytest.mark.skipif(not LINUX, reason="mallopt is glibc's")
@pytest.mark.parametrize(
    "setup",
    [
        "from trainer import train; assert train.run(['tiny', 'stepz=3']) == 2",
        "from trainer.eval import predict; assert predict.run(['--workdir', 'nowhere', '--src', '10.0.0.1']) == 2",
        ("from trainer.eval import evaluate; assert evaluate.run(['--workdir', 'nowhere', '--data_dir', 'nowhere', "
         "'--output', 'r']) == 2"),
    ],
    ids=["train", "predict", "evaluate"],
)
def test_the_trainer_commands_keep_freed_memory_for_xla(tmp_path, setup):
    """``trainer.train``, ``trainer.predict`` and ``trainer.evaluate`` (with a model) apply the setting before
    they start JAX, even for a run that ends in a usage error."""
    kept, _ = _xla_faults(tmp_path, setup, rounds=1)
    assert kept == "True"


def test_the_baselines_alone_keep_the_default_arenas(tmp_path):
    """``trainer.evaluate --baselines_only`` starts no JAX: its numpy and scipy threads keep glibc's arenas."""
    setup = ("from trainer.eval import evaluate; assert evaluate.run(['--baselines_only', '--data_dir', 'nowhere', "
             "'--output', 'r']) == 2")
    kept, _ = _xla_faults(tmp_path, setup, rounds=1)
    assert kept == "False"


@pytest.mark.skipif(not LINUX, reason="mallopt is glibc's")
def test_canary_glibc_mallopt_takes_mmap_max_and_arena_max(tmp_path):
    """glibc's ``mallopt`` takes -4 (M_MMAP_MAX) and -8 (M_ARENA_MAX) of its malloc.h; in a fresh interpreter,
    as they change the process for good. That they act is checked by the page faults above."""
    result = _python("""
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        print(mallopt(-4, 0), mallopt(-8, 1))
    """, tmp_path)
    assert result.stdout.split() == ["1", "1"], result.stderr


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
