"""One job run's lifecycle, the same for every job that writes an output directory.

0. :func:`run_job`: the options parsed, bad options or input reported as one ``error:`` line (exit 2).
1. :func:`locked_output` (:func:`run_output_job` for a job that writes ``--output``): the job's filesystem
   options handed to :mod:`~beam_pipelines.common.object_store`, Beam's ``--temp_location`` checked, and
   ``--output`` entered through :class:`~beam_pipelines.common.output.OutputDir` (the writer lock: a second
   writer is refused before any input is read).
2. :class:`JobContext`: what every job's workers share (output, scratch, filesystem options, the version
   written); each job subclasses it with its own fields.
3. :class:`JobRun`: the run's scratch folder, ``<temp_location>/<job>-<12 hex>`` under Beam's
   ``--temp_location`` (:func:`scratch_under`), else the job's own folder in its output, and Beam's log
   file: beside local scratch, or in a local temporary folder of its own when the scratch is remote or
   under ``--temp_location`` (Beam's log is written by this process). The stages publish the output with
   its manifest last (the job's ``finalize``; the proof that the output is complete). At the end,
   :meth:`JobRun.finished` removes scratch and log; :meth:`JobRun.failed` removes scratch, keeps the log
   and reports the failure: one ``error:`` line, then what the output now holds and where the log is.

No Apache Beam import here: ``pretokenize --in_process`` runs without Beam (the Beam stages live in each
job's ``transforms``/``pipeline`` module, the quiet pipeline run in :mod:`beam_pipelines.common.joblog`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import ClassVar

from beam_pipelines.common import object_store, storage
from beam_pipelines.common.errors import InputError, RunError, UsageError, report
from beam_pipelines.common.output import OutputDir

LOG_NAME = "pipeline.log"


def run_job(
    argv: list[str] | None,
    parse: Callable[[list[str] | None], tuple],
    body: Callable[..., int],
    errors: tuple[type[Exception], ...] = (UsageError, InputError),
) -> int:
    """A job's ``run``: ``parse(argv)`` gives ``(options, beam_args)``, then ``body(options, beam_args,
    started)`` returns the exit code. ``errors`` raised by either are one ``error:`` line and their exit
    code (:func:`~beam_pipelines.common.errors.report`); ``--help`` returns its exit code."""
    started = time.monotonic()
    try:
        try:
            options, beam_args = parse(argv)
        except SystemExit as exc:  # argparse's --help: an exit code, not an exit
            return exc.code if isinstance(exc.code, int) else 2
        return body(options, beam_args, started)
    except errors as exc:
        return report(exc)


def run_output_job(argv: list[str] | None, parse: Callable[[list[str] | None], tuple], body: Callable[..., int]) -> int:
    """:func:`run_job` for a job that writes ``options.output``: ``body(options, beam_args, started, out_dir)``
    runs inside :func:`locked_output` (``options.fs_options``, ``options.temp_location``), so a second writer
    is refused before any input is read."""

    def locked(options, beam_args: list[str], started: float) -> int:
        with locked_output(options.output, options.fs_options, options.temp_location) as out_dir:
            return body(options, beam_args, started, out_dir)

    return run_job(argv, parse, locked)


def beam_storage_options(beam_args: list[str]) -> tuple[str, dict]:
    """Beam's ``--temp_location`` and its filesystem options (S3 endpoint and keys, GCS project...)."""
    if not beam_args:
        return "", {}  # no Beam option given: nothing to parse, and Beam need not be imported
    # Beam imported here, not at the top: about 1.5-2.6 s of start-up that a job without Beam options
    # (pretokenize --in_process) never needs (python -X importtime, apache_beam.options.pipeline_options).
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from beam_pipelines.common.options import beam_options

    pipeline_options = beam_options(beam_args)
    temp_location = pipeline_options.view_as(GoogleCloudOptions).temp_location or ""
    return temp_location, object_store.filesystem_options(pipeline_options)


@contextlib.contextmanager
def locked_output(output: str, fs_options: dict, temp_location: str = "") -> Iterator[OutputDir]:
    """Configure storage with ``fs_options``, check ``temp_location`` (when given), then hold ``output``'s
    writer lock while the block runs (see :class:`~beam_pipelines.common.output.OutputDir`)."""
    object_store.configure(fs_options)
    if temp_location:
        storage.check_location(temp_location)
    with OutputDir(output) as out_dir:
        yield out_dir


def scratch_under(temp_location: str, job: str) -> str:
    """``<temp_location>/<job>-<12 hex>``: a run id, so two runs sharing a temp location never meet; ""
    when there is no ``temp_location`` (the job then uses its folder in its output)."""
    if not temp_location:
        return ""
    return storage.join(temp_location.rstrip("/"), f"{job}-{uuid.uuid4().hex[:12]}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobContext:
    """What every job's workers need to know (small and picklable; pickled into the DoFns).

    A job subclasses it with its own fields and names its scratch folder in ``--output``
    (:attr:`TMP_DIR`).
    """

    TMP_DIR: ClassVar[str] = "_tmp"  # the scratch folder in the output when there is no --temp_location

    output: str
    scratch: str = ""  # the scratch folder (a URL too; scratch_under); "" means OUT/TMP_DIR
    fs_options: dict = dataclasses.field(default_factory=dict)  # Beam's filesystem options, for the workers
    version: int = 1  # the version this run writes (> 1: an append)
    previous_fingerprint: str | None = None  # an append: the fingerprint of the version it adds to
    created: str | None = None  # the version's creation time, fixed once when planned

    @property
    def tmp(self) -> str:
        """The run's scratch folder."""
        return self.scratch or os.path.join(self.output, self.TMP_DIR)

    def configure_storage(self) -> None:
        """Give this worker's :mod:`~beam_pipelines.common.object_store` the job's object-store options (a Dask
        worker has none)."""
        if self.fs_options:
            object_store.configure(self.fs_options)

    def prepare_worker(self) -> None:
        """Set up the process that runs a stage (a job may do more than configure storage)."""
        self.configure_storage()


def remove_scratch(scratch: str) -> None:
    """Remove a scratch folder, best effort: a failure to remove it is a warning, never the job's error."""
    try:
        storage.rmtree(scratch)
    except (OSError, InputError) as exc:
        print(f"warning: could not remove the scratch files under {scratch} ({exc})", file=sys.stderr)


def keep_only_log(scratch: str, log_path: str) -> None:
    """After a failure: remove everything in ``scratch`` but the log; without a log, ``scratch`` too."""
    if not os.path.isfile(log_path):
        shutil.rmtree(scratch, ignore_errors=True)
        return
    keep = os.path.basename(log_path)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(scratch):
            if name != keep:
                path = os.path.join(scratch, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)


def log_notes(log_path: str) -> tuple[str, ...]:
    """The line that points a user at the log after a failure (none if the log is gone with its folder)."""
    return (f"Beam's log, with the workers' tracebacks: {log_path}",) if os.path.isfile(log_path) else ()


def no_manifest(exc: Exception) -> int:
    """The report of a pipeline that ended without error but left no manifest (exit 1)."""
    return report(RunError(f"the pipeline finished without writing a manifest ({exc})"))


class JobRun:
    """One run's scratch folder and log file, from start to cleanup.

    Creating it empties and creates ``scratch`` and chooses the log's place: ``scratch/pipeline.log`` for
    local scratch in the output, else a local temporary folder ``ping-llm-<job>-log-*`` of its own
    (``separate_log``: the scratch is under ``--temp_location``; remote scratch always). Then exactly one
    of :meth:`finished` and :meth:`failed`.
    """

    def __init__(self, job: str, scratch: str, separate_log: bool):
        self.job = job
        self.scratch = scratch
        self.separate = bool(separate_log) or storage.is_remote(scratch)
        storage.rmtree(scratch)  # what a killed run left there
        storage.makedirs(scratch)
        self.log_dir = tempfile.mkdtemp(prefix=f"ping-llm-{job}-log-") if self.separate else scratch
        self.log = os.path.join(self.log_dir, LOG_NAME)

    def finished(self) -> None:
        """After a success: scratch (if the stages left any) and the log go."""
        if self.separate:
            remove_scratch(self.scratch)
            shutil.rmtree(self.log_dir, ignore_errors=True)
        else:  # local: the log goes with it
            shutil.rmtree(self.scratch, ignore_errors=True)

    def failed(self, error: Exception, *state: str, traceback_of: BaseException | None = None) -> int:
        """After a failure: scratch removed but the log; prints ``error: <error>``, then ``state`` (what the
        output now holds) and the log's place; returns the exit code.

        ``traceback_of``: a failure raised without Beam (which writes its own): its traceback is appended to
        the log, and the note names it as the traceback.
        """
        if traceback_of is not None:
            with open(self.log, "a", encoding="utf-8") as f:
                f.write("The job failed:\n")
                traceback.print_exception(traceback_of, file=f)
        if self.separate:
            remove_scratch(self.scratch)
            if not os.path.isfile(self.log):  # nothing was logged: no folder left behind
                shutil.rmtree(self.log_dir, ignore_errors=True)
        else:
            keep_only_log(self.scratch, self.log)
        notes = log_notes(self.log)
        if traceback_of is not None and notes:
            notes = (f"the traceback: {self.log}",)
        return report(error, *state, *notes)
