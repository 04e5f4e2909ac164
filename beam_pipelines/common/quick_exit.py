"""Ending a finished process without the interpreter's teardown.

When a job's launcher or one of its Beam worker processes is done, what remains for Python is its
teardown: every module (Beam, gRPC, pyarrow, numpy) and object freed one by one, 0.3 s of CPU per process
on the 2-core development machine, paid after the job's work and its output are complete. The exit
handlers (``atexit``: logging's flush, weakref finalizers, temporary folders) still run; only the teardown
after them is skipped. Used by the jobs' ``__main__`` and by :mod:`beam_pipelines.common.worker_main`.
"""

from __future__ import annotations

import atexit
import os
import sys

from beam_pipelines.common.tricks import PLAIN_EXIT, plain


def exit_now(status: int | None = 0) -> None:
    """End this process at once with ``status`` (None is 0, as for ``sys.exit``): the ``atexit`` handlers
    run and the standard streams are flushed, the interpreter's teardown is skipped."""
    if plain(PLAIN_EXIT):
        sys.exit(status)
    atexit._run_exitfuncs()  # what a normal exit runs first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more can reach it anyway
            pass
    os._exit(status or 0)
