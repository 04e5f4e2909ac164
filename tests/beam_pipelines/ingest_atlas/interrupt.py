"""Run a job with one of its functions turned into a SIGKILL (or a pause), for the crash and concurrency tests.

    python -m tests.beam_pipelines.ingest_atlas.interrupt WHEN MODULE:FUNC[:MATCH] JOB_MODULE -- ARGV...

``WHEN`` is ``before`` (the process kills itself with SIGKILL when FUNC is called), ``after`` (once the first
such call returned), or ``pause:PATH`` (the call waits until the file PATH exists, then goes on). ``MATCH``:
only calls whose first argument contains this text count. ``JOB_MODULE``'s ``run(argv)`` is then run in
this process (the tests use ``--direct_running_mode=in_memory``, so the whole pipeline runs here). Test
code only: the jobs carry no hook for this.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import time


def _wrap(func, when: str, match: str):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if match and not (args and match in str(args[0])):
            return func(*args, **kwargs)
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        if when.startswith("pause:"):
            gate = when.split(":", 1)[1]
            with open(gate + ".waiting", "w"):
                pass
            while not os.path.exists(gate):
                time.sleep(0.02)
        result = func(*args, **kwargs)
        if when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return wrapper


def main(argv: list[str]) -> int:
    when, target, job = argv[0], argv[1], argv[2]
    assert argv[3] == "--"
    module_name, func_name, *match = target.split(":", 2)
    module = importlib.import_module(module_name)
    setattr(module, func_name, _wrap(getattr(module, func_name), when, match[0] if match else ""))
    return importlib.import_module(job).run(argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
