"""The worker process of the :class:`~beam_pipelines.common.options.LocalRunner` in multi-process mode:
Beam's own SDK worker, then an exit that skips the interpreter's teardown.

``python -m beam_pipelines.common.worker_main`` runs :func:`apache_beam.runners.worker.sdk_worker_main.main`
unchanged. When it returns, the runner has had every bundle's result and closed the control stream, and
the worker has closed its log stream: nothing the job needs is left in the process. Python's teardown
of it still took about 0.3 s per worker on the 2-core development machine, and the runner stops its
workers one after another, waiting for each process to end: about 0.5 s at the end of every job with two
workers (measured), more with more. So the worker ends with
:func:`~beam_pipelines.common.quick_exit.exit_now`. A worker that fails raises as Beam's does, with its
traceback and a non-zero status.
"""

from __future__ import annotations

import sys

from beam_pipelines.common.quick_exit import exit_now


def main(argv: list[str] | None = None) -> None:
    """Run Beam's SDK worker (its arguments and environment, as the runner gave them), then exit now."""
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv if argv is None else argv)
    exit_now(0)


if __name__ == "__main__":
    main()
