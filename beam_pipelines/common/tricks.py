"""The jobs' process tricks: each leans on behaviour of Beam, CPython or glibc that is not public API.

Each one is here because ``benchmarks/process_tricks_bench.py`` measured it worth its risk, or because a user
sees what it does (docs/performance.md, "Process tricks"). ``tests/beam_pipelines/common/test_tricks.py``
holds a canary test per private API used, named after it, so that an upgrade that breaks a trick fails that
test by name. Each trick has a switch, read by :func:`plain` and nowhere else: its environment variable set
to ``1`` makes the jobs do the plain thing instead, with the same output bytes, the fallback while the trick
is mended.

The tricks, each with its switch and the private API it relies on:

* :func:`run_on_fn_api_runner` (``PING_LLM_PLAIN_RUNNER``; off: Beam's ``DirectRunner`` in the same running
  mode): the ``LocalRunner`` runs Beam's batch engine itself, without the DirectRunner's Prism download,
  with its workers' stderr in the job's log, and its workers through :func:`main`. Relies on
  ``fn_runner.FnApiRunner(default_environment=, provision_info=)`` keeping the environment when
  ``direct_running_mode`` is unset, ``fn_runner.ExtendedProvisionInfo``,
  ``JobServiceHandle.encode_pipeline_options``, ``SubprocessSDKEnvironment.from_command_string`` and
  ``sdk_worker_main.main``.
* :func:`exit_now` (``PING_LLM_PLAIN_EXIT``): a finished process skips the interpreter's teardown. Relies on
  CPython's ``atexit._run_exitfuncs``.
* :func:`keep_freed_memory` (``PING_LLM_PLAIN_MALLOC``): glibc keeps freed arrays for the next batch, and
  :func:`keep_freed_memory_for_xla` (the same switch) every block of XLA's CPU steps, however large, in the
  trainer's commands. Relies on glibc's ``mallopt`` and the parameter numbers of its ``malloc.h``.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import shlex
import sys

PLAIN_RUNNER = "PING_LLM_PLAIN_RUNNER"
PLAIN_EXIT = "PING_LLM_PLAIN_EXIT"
PLAIN_MALLOC = "PING_LLM_PLAIN_MALLOC"
SWITCHES = (PLAIN_RUNNER, PLAIN_EXIT, PLAIN_MALLOC)


def plain(switch: str) -> bool:
    """Whether the trick of ``switch`` (one of :data:`SWITCHES`) is turned off: its variable is set and not ``0``."""
    return os.environ.get(switch, "") not in ("", "0")


# --- ending a finished process without the interpreter's teardown ------------------------------------------
# When a job's launcher or one of its Beam worker processes is done, what remains for Python is its teardown:
# every module (Beam, gRPC, pyarrow, numpy) and object freed one by one, paid after the job's work and output
# are complete. The exit handlers (logging's flush, weakref finalizers, temporary folders) still run.


def exit_now(status: int | None = 0) -> None:
    """End this process at once with ``status`` (None is 0, as for ``sys.exit``): the ``atexit`` handlers
    run and the standard streams are flushed, the interpreter's teardown is skipped."""
    if plain(PLAIN_EXIT):
        sys.exit(status)
    atexit._run_exitfuncs()  # what a normal exit runs first (CPython's; not public API)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more can reach it anyway
            pass
    os._exit(status or 0)


# --- keeping freed array memory in the process (glibc) -----------------------------------------------------
# The jobs' stages allocate and free arrays of tens of megabytes per batch. glibc's malloc serves large blocks
# with mmap and returns freed memory at the top of the heap to the kernel, so each batch's arrays are fresh
# pages, every one faulted in again. mallopt raises the thresholds (the same as the MALLOC_MMAP_THRESHOLD_,
# MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ environment variables, which a worker started by a cluster cannot
# be given): blocks up to 32 MiB come from the heap, and up to 1 GiB of freed heap is kept for reuse. A
# process's peak memory is unchanged (what is kept was in use at the peak).

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameter numbers, glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Apply the settings above once per process; True when they took effect (glibc), else False."""
    if not sys.platform.startswith("linux") or plain(PLAIN_MALLOC):
        return False
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return _mallopt(settings)


def _mallopt(settings) -> bool:
    """glibc's ``mallopt`` for each (parameter, value); True when every one took effect, else False."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, without a library search
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in settings)  # mallopt returns 1 on success


# XLA's CPU runtime allocates a step's buffers anew at every step, many of them larger than 32 MiB, the largest
# block the mmap threshold can send to the heap: glibc maps each one fresh and unmaps it when it is freed, so
# every step faults in and zeroes hundreds of MiB again. A 16-step `tiny` run on 2 cores spent 13 s of system
# time (5M page faults) beside 24 s of user time. With mmap off (M_MMAP_MAX 0), every block comes from a heap;
# with one arena (M_ARENA_MAX 1), from the one heap, whose freed memory the trim threshold keeps for the next
# step (the threads of XLA's pool share it). Applied before the JAX backend starts its threads: an arena, once
# made, stays. The cost is memory: the heap keeps what a step freed (peak RSS 1.75 GiB against 1.24 GiB in
# benchmarks/process_tricks_bench.py's train job).

_M_MMAP_MAX, _M_ARENA_MAX = -4, -8  # mallopt parameter numbers, glibc's malloc.h


@functools.lru_cache(maxsize=1)
def keep_freed_memory_for_xla() -> bool:
    """:func:`keep_freed_memory`, and every block from the one heap (the settings above), once per process; True
    when they took effect (glibc), else False. For the trainer's commands, called before JAX starts its backend."""
    if not keep_freed_memory():
        return False
    return _mallopt(((_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1)))


# --- the LocalRunner's engine and its worker processes ------------------------------------------------------
# Since Beam 2.6x the DirectRunner first tries the Prism runner, a Go binary it downloads from GitHub at run
# time: offline that costs a failed download and leaks a temporary folder per run, and online it would run
# the jobs on another engine that ignores --direct_running_mode and --direct_num_workers. The LocalRunner
# (beam_pipelines.common.options) runs what the DirectRunner runs after that attempt for a batch pipeline,
# with the workers' stderr appended to the job's log instead of the terminal, and its workers through
# main() below, which ends each one without the teardown: the runner stops its workers one after another,
# waiting for each process to end.


def worker_command() -> list[str]:
    """The command line of a LocalRunner worker process: :func:`main`."""
    return [sys.executable, "-m", "beam_pipelines.common.tricks"]


def run_on_fn_api_runner(pipeline, options, worker_log: str | None):
    """Run ``pipeline`` as Beam's DirectRunner runs a batch pipeline once Prism is out of the way: on Beam's
    FnApiRunner, in ``--direct_running_mode``. In multi-process mode with a ``worker_log``, the workers are
    :func:`main`, run by a shell that appends their stderr to ``worker_log``. Returns the pipeline result."""
    # Beam imported here: about 1 s of start-up that the jobs without Beam (update --in_process) never need.
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    # SDK workers read the pipeline options (e.g. their log level) from the provision info.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    direct = options.view_as(DirectOptions)
    if not worker_log or direct.direct_running_mode != "multi_processing":
        return fn_runner.FnApiRunner(provision_info=info).run_pipeline(pipeline, options)
    # FnApiRunner replaces a given environment only for a running mode it knows, so the mode is unset while
    # it starts (the workers got the options above already).
    command = f"{shlex.join(worker_command())} 2>>{shlex.quote(worker_log)}"
    environment = SubprocessSDKEnvironment.from_command_string(command_string=command)
    direct.direct_running_mode = None
    try:
        return fn_runner.FnApiRunner(default_environment=environment, provision_info=info).run_pipeline(
            pipeline, options
        )
    finally:
        direct.direct_running_mode = "multi_processing"


def main(argv: list[str] | None = None) -> None:
    """A LocalRunner worker: Beam's own SDK worker (its arguments and environment, as the runner gave them),
    then :func:`exit_now`. A worker that fails raises as Beam's does, with its traceback and a non-zero status."""
    from apache_beam.runners.worker import sdk_worker_main  # Beam: see run_on_fn_api_runner

    sdk_worker_main.main(sys.argv if argv is None else argv)
    exit_now(0)


if __name__ == "__main__":
    main()
