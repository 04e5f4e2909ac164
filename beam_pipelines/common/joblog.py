"""Running a job's Beam pipeline quietly: Beam's own output goes to a log file, the terminal gets one line.

Beam logs its start-up and its workers' tracebacks (tens of lines per failure, each worker's twice) to
stderr. :func:`run_pipeline` sends all of it to the run's log file instead (its place is chosen by
:class:`beam_pipelines.common.lifecycle.JobRun`): the records Beam logs in this process, which with the
local runner include every record its worker processes send back, and those workers' own stderr (see
:class:`beam_pipelines.common.options.LocalRunner`). When the pipeline fails, the exception's full
traceback is appended to the log and :func:`pipeline_error` makes the one line the terminal shows.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterator

import apache_beam as beam

from beam_pipelines.common.options import beam_options, run_to_completion

# Where the useful line sits in the text of an exception that Beam wrapped in layers of context (a
# worker's traceback inside a RuntimeError): after the last of these, the first found in this order.
_ERROR_MARKERS = ("InputError: ", "SchemaError: ", "OSError: ", "RuntimeError: ")
_CLOSING = {"'": "'", '"': '"', "[": "]"}


def pipeline_error(exc: BaseException) -> str:
    """The useful line of an exception raised by a pipeline run, without Beam's ``[while running ...]``."""
    text = str(exc)
    line = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    for marker in _ERROR_MARKERS:
        if marker in text:
            line = text.rsplit(marker, 1)[1].splitlines()[0]
            break
    return _trim(line.split(" [while running", 1)[0])


def _trim(line: str) -> str:
    """Strip the quotes and brackets that wrap ``line`` (a repr such as ``['...']``) or that cutting it
    out of a longer text left unpaired at either end; paired ones (``[Errno 2] ... 'path'``) stay."""
    line = line.strip()
    while True:
        before = line
        if len(line) >= 2 and _CLOSING.get(line[0]) == line[-1] and _paired(line[1:-1], line[0]):
            line = line[1:-1].strip()
        elif line and line[-1] in "'\"]" and not _paired(line, line[-1]):
            line = line[:-1].rstrip()
        elif line and line[0] in "'\"[" and not _paired(line, line[0]):
            line = line[1:].lstrip()
        if line == before:
            return line


def _paired(text: str, char: str) -> bool:
    if char in "[]":
        return text.count("[") == text.count("]")
    return text.count(char) % 2 == 0


@contextlib.contextmanager
def beam_logs_to(path: str) -> Iterator[None]:
    """While the block runs, Beam's log records in this process go to ``path`` (appended), not to stderr."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("apache_beam")
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        handler.close()


def run_pipeline(beam_args: list[str], build: Callable[[beam.Pipeline], object], log_path: str) -> None:
    """Make a pipeline from the Beam options, ``build(pipeline)`` its stages, run it to completion.

    Everything Beam prints goes to ``log_path`` (its directory must exist). A failure is re-raised after
    its traceback is appended to the log.
    """
    with beam_logs_to(log_path):
        try:
            pipeline = beam.Pipeline(options=beam_options(beam_args))
            build(pipeline)
            run_to_completion(pipeline, worker_log=log_path)
        except BaseException as exc:
            with contextlib.suppress(OSError), open(log_path, "a", encoding="utf-8") as f:
                f.write("\nThe pipeline failed:\n")
                traceback.print_exception(exc, file=f)
            raise
