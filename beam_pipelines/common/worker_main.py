"""The worker processes of the :class:`~beam_pipelines.common.options.LocalRunner` in multi-process mode:
Beam's own SDK worker, started ahead of the runner where the job asks for it, and ended without the
interpreter's teardown.

``python -m beam_pipelines.common.worker_main`` runs :func:`apache_beam.runners.worker.sdk_worker_main.main`
unchanged. When it returns, the runner has had every bundle's result and closed the control stream, and
the worker has closed its log stream: nothing the job needs is left in the process. Python's teardown
of it still took about 0.3 s per worker on the 2-core development machine, and the runner stops its
workers one after another, waiting for each process to end: about 0.5 s at the end of every job with two
workers (measured), more with more. So the worker ends with
:func:`~beam_pipelines.common.quick_exit.exit_now`. A worker that fails raises as Beam's does, with its
traceback and a non-zero status.

**Warm workers** (:class:`WarmWorkers`). A worker spends its first second importing Beam, and the runner
starts its workers only once the launcher has imported Beam itself and built the pipeline: two imports one
after the other. A job that knows it will run on the LocalRunner's worker processes starts them first,
before its own import of Beam (``--warm PREFIX``: the worker imports Beam, then waits on the named pipe
``PREFIX.env``); the runner's worker command then only claims a waiting one (``--claim DIR``: the first
``K.claimed`` folder it can create), hands it the environment the runner gave (its service addresses and
options) through that pipe, waits for it to end and ends with the status it left in ``PREFIX.status``. A claim that finds none waiting runs the
worker itself, as without warm workers. Written by hand: Beam's own worker pools (``worker_pool_main``)
start each worker's process only when asked, which is the cost this avoids.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from beam_pipelines.common.quick_exit import exit_now
from beam_pipelines.common.tricks import PLAIN_RUNNER, PLAIN_WORKERS, plain

_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal for this process when its parent ends
_POLL_SECONDS = 0.005  # a claim's wait for its warm worker to read (while it imports, at most a second)
_LAUNCHER_PID = "PING_LLM_WARM_WORKERS_LAUNCHER"  # environment variable: the pid that started a warm worker
_END_POLL_SECONDS = 0.01  # a claim's wait for its worker to end (the runner waits for each claim in turn)


def worker_command(*args: str) -> list[str]:
    """The command line of a worker process (this module), with ``args``."""
    return [sys.executable, "-m", "beam_pipelines.common.worker_main", *args]


def main(argv: list[str] | None = None) -> None:
    """Run Beam's SDK worker (its arguments and environment, as the runner gave them), then exit now;
    with ``--warm PREFIX`` or ``--claim DIR``, the two halves of a warm worker (module docstring)."""
    argv = sys.argv if argv is None else argv
    if len(argv) >= 3 and argv[1] == "--warm":
        _serve_warm(argv[2], argv[3:])
    if len(argv) == 3 and argv[1] == "--claim":
        _claim(argv[2])
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(argv)
    exit_now(0)


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
