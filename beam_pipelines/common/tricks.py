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
* :func:`keep_freed_memory` (``PING_LLM_PLAIN_MALLOC``): glibc keeps freed arrays for the next batch.
  Relies on glibc's ``mallopt`` and the parameter numbers of its ``malloc.h``.
* :class:`WarmWorkers` (``PING_LLM_PLAIN_WORKERS``): the LocalRunner's worker processes start ahead and
  import Beam while the launcher does. Relies on ``sdk_worker_main.main`` taking the runner's settings from
  its environment.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import functools
import importlib
import json
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

PLAIN_RUNNER = "PING_LLM_PLAIN_RUNNER"
PLAIN_EXIT = "PING_LLM_PLAIN_EXIT"
PLAIN_MALLOC = "PING_LLM_PLAIN_MALLOC"
PLAIN_WORKERS = "PING_LLM_PLAIN_WORKERS"
SWITCHES = (PLAIN_RUNNER, PLAIN_EXIT, PLAIN_MALLOC, PLAIN_WORKERS)


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
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, without a library search
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)  # mallopt returns 1 on success


# --- the LocalRunner's engine and its worker processes ------------------------------------------------------
# Since Beam 2.6x the DirectRunner first tries the Prism runner, a Go binary it downloads from GitHub at run
# time: offline that costs a failed download and leaks a temporary folder per run, and online it would run
# the jobs on another engine that ignores --direct_running_mode and --direct_num_workers. The LocalRunner
# (beam_pipelines.common.options) runs what the DirectRunner runs after that attempt for a batch pipeline,
# with the workers' stderr appended to the job's log instead of the terminal, and its workers through
# main() below, which ends each one without the teardown: the runner stops its workers one after another,
# waiting for each process to end.


def worker_command(*args: str) -> list[str]:
    """The command line of a LocalRunner worker process (:func:`main`), with ``args``."""
    return [sys.executable, "-m", "beam_pipelines.common.tricks", *args]


def run_on_fn_api_runner(pipeline, options, worker_log: str | None, warm_workers: WarmWorkers | None = None):
    """Run ``pipeline`` as Beam's DirectRunner runs a batch pipeline once Prism is out of the way: on Beam's
    FnApiRunner, in ``--direct_running_mode``. In multi-process mode with a ``worker_log``, the workers are
    :func:`main`, run by a shell that appends their stderr to ``worker_log`` (claiming ``warm_workers`` when
    given). Returns the pipeline result."""
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
    worker = warm_workers.command() if warm_workers else worker_command()
    command = f"{shlex.join(worker)} 2>>{shlex.quote(worker_log)}"
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
    then :func:`exit_now`. A worker that fails raises as Beam's does, with its traceback and a non-zero status.
    With ``--warm PREFIX`` or ``--claim DIR``, the two halves of a warm worker (:class:`WarmWorkers`)."""
    argv = sys.argv if argv is None else argv
    if len(argv) >= 3 and argv[1] == "--warm":
        _serve_warm(argv[2], argv[3:])
    if len(argv) == 3 and argv[1] == "--claim":
        _claim(argv[2])
    from apache_beam.runners.worker import sdk_worker_main  # Beam: see run_on_fn_api_runner

    sdk_worker_main.main(argv)
    exit_now(0)


# --- warm workers: the LocalRunner's worker processes started ahead ------------------------------------------
# A worker spends its first second importing Beam, and the runner starts its workers only once the launcher
# has imported Beam itself and built the pipeline: two imports one after the other. A job that knows it will
# run on the LocalRunner's worker processes starts them first, before its own import of Beam (--warm PREFIX:
# the worker imports Beam, then waits on the named pipe PREFIX.env); the runner's worker command then only
# claims a waiting one (--claim DIR: the first K.claimed folder it can create), hands it the environment the
# runner gave (its service addresses and options) through that pipe, waits for it to end and ends with the
# status it left in PREFIX.status. A claim that finds none waiting runs the worker itself. Written by hand:
# Beam's own worker pools (worker_pool_main) start each worker's process only when asked, the cost this avoids.

_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal for this process when its parent ends
_POLL_SECONDS = 0.005  # a claim's wait for its warm worker to read (while it imports, at most a second)
_LAUNCHER_PID = "PING_LLM_WARM_WORKERS_LAUNCHER"  # environment variable: the pid that started a warm worker
_END_POLL_SECONDS = 0.01  # a claim's wait for its worker to end (the runner waits for each claim in turn)


def _serve_warm(prefix: str, modules: list[str]) -> None:
    """A warm worker: import Beam and ``modules`` (the job's stages, which its DoFns would import when
    unpickled) now, wait for the environment of the runner's worker, run as that worker, leave its exit
    status in ``PREFIX.status``."""
    _end_with_parent()
    from apache_beam.runners.worker import sdk_worker_main

    for module in modules:
        importlib.import_module(module)

    with open(f"{prefix}.env", encoding="utf-8") as f:  # blocks until a claim opens it
        env = json.load(f)
    os.environ.clear()
    os.environ.update(env)
    status = 1
    try:
        sdk_worker_main.main([sys.argv[0]])
        status = 0
    finally:
        with open(f"{prefix}.status.tmp", "w", encoding="utf-8") as f:
            f.write(str(status))
        os.replace(f"{prefix}.status.tmp", f"{prefix}.status")
    exit_now(status)


def _claim(directory: str) -> None:
    """The runner's worker command with warm workers: hand this environment to a waiting worker and end with
    its status; run the worker here (return) if none is waiting."""
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    for name in (n for n in names if n.endswith(".pid")):
        prefix = os.path.join(directory, name[: -len(".pid")])
        try:
            os.mkdir(f"{prefix}.claimed")  # atomic: one claim per warm worker
        except OSError:
            continue
        with open(f"{prefix}.pid", encoding="utf-8") as f:
            pid = int(f.read())
        fd = _open_for_writing(f"{prefix}.env", pid)
        if fd is None:  # it ended before being used (it cannot have been claimed twice)
            continue
        os.set_blocking(fd, True)  # opened without blocking only to learn whether it reads yet
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(os.environ), f)
        while _alive(pid):  # not our child: its status comes through the file it leaves
            time.sleep(_END_POLL_SECONDS)
        try:
            with open(f"{prefix}.status", encoding="utf-8") as f:
                status = int(f.read())
        except (OSError, ValueError):  # killed before it could say
            status = 1
        exit_now(status)


def _open_for_writing(fifo: str, pid: int) -> int | None:
    """Open the named pipe a warm worker ``pid`` reads, once it does (it may still be importing Beam); None
    when the worker has ended."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        if not _alive(pid):
            return None
        time.sleep(_POLL_SECONDS)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's (a reused pid): not ours any more
        return False
    # A zombie (ended, not yet reaped by the launcher) still answers; its state says it ended.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _end_with_parent() -> None:
    """Ask the kernel to end this process with the launcher that started it (Linux), so a warm worker left
    waiting never outlives a launcher that was killed before it could close them."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if str(os.getppid()) != os.environ.get(_LAUNCHER_PID):  # it ended before the request took effect
            exit_now(0)


class WarmWorkers:
    """``count`` worker processes started now, each importing Beam and ``modules`` while the launcher goes
    on; stderr to ``log`` (appended), their pipes in a temporary folder. :meth:`command` is the runner's
    worker command; :meth:`close` ends the ones never claimed and removes the pipes."""

    def __init__(self, count: int, log: str, modules: Sequence[str] = ()):
        # Not in the job's scratch folder: the job's last stage removes that while the workers still run.
        self.directory = tempfile.mkdtemp(prefix="ping-llm-workers-")
        self._processes: list[tuple[str, subprocess.Popen]] = []
        with open(log, "ab") as err:
            for k in range(count):
                prefix = os.path.join(self.directory, f"{k:04d}")
                os.mkfifo(f"{prefix}.env")
                cmd = worker_command("--warm", prefix, *modules)
                env = {**os.environ, _LAUNCHER_PID: str(os.getpid())}  # not 1: a launcher may be a container's init
                process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=err, env=env)
                with open(f"{prefix}.pid.tmp", "w", encoding="utf-8") as f:
                    f.write(str(process.pid))
                os.replace(f"{prefix}.pid.tmp", f"{prefix}.pid")  # complete before a claim can see it
                self._processes.append((prefix, process))

    def command(self) -> list[str]:
        """The worker command (arguments) that claims one of these workers."""
        return worker_command("--claim", self.directory)

    def close(self) -> None:
        """End the workers no claim took, wait for every one, remove the pipes."""
        for prefix, process in self._processes:
            try:
                os.mkdir(f"{prefix}.claimed")  # no claim can take it any more
            except OSError:  # claimed: it ends when the runner stops it
                continue
            process.terminate()  # waiting (or still importing Beam): it has done nothing yet
        for _, process in self._processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def local_worker_count(beam_args: list[str]) -> int | None:
    """How many worker processes the LocalRunner will start for these Beam arguments (as
    :func:`~beam_pipelines.common.options.beam_options` completes them), or None when the job will not run on
    them (another runner, or the one-process mode). Read without importing Beam."""
    values: dict[str, str] = {}
    for i, arg in enumerate(beam_args):
        name, eq, value = arg.partition("=")
        if not eq and i + 1 < len(beam_args):
            value = beam_args[i + 1]
        values[name] = value
    if "--runner" in values or values.get("--direct_running_mode", "multi_processing") != "multi_processing":
        return None
    try:
        workers = int(values.get("--direct_num_workers", "0"))
    except ValueError:
        return None  # Beam will refuse it, and say why
    return workers if workers > 0 else multiprocessing.cpu_count()  # 0: what the FnApiRunner takes


def start_warm_workers(beam_args: list[str], log: str, modules: Sequence[str] = ()) -> WarmWorkers | None:
    """:class:`WarmWorkers` (importing ``modules`` too) for a job that will run on the LocalRunner's worker
    processes, else None. Linux only: a claim learns that its worker ended from ``/proc`` (elsewhere an
    ended worker the launcher has not reaped yet would look alive), and the parent-death signal is Linux's;
    elsewhere the runner starts its workers as before."""
    count = local_worker_count(beam_args)
    if not count or not sys.platform.startswith("linux") or plain(PLAIN_WORKERS) or plain(PLAIN_RUNNER):
        return None
    return WarmWorkers(count, log, modules)


if __name__ == "__main__":
    main()
