"""Beam pipeline options shared by every job: the pass-through arguments plus sensible defaults, and
which options Beam knows (:class:`BeamOptionNames`, for :func:`beam_pipelines.common.cli.parse_job_args`)."""

from __future__ import annotations

import contextlib
import importlib
import io
import re

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineRunner

from beam_pipelines.common.errors import UsageError, unknown_option
from beam_pipelines.common.tricks import PLAIN_RUNNER, plain, run_on_fn_api_runner

# Beam only knows the DaskRunner by its full name; accept the short one the docs use.
_RUNNER_ALIASES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}
LOCAL_RUNNER = "beam_pipelines.common.options.LocalRunner"
# Beam's runner modules that define options of their own (a PipelineOptions subclass outside
# apache_beam.options.pipeline_options, registered when the module is imported). Imported only when an
# option is not known otherwise (the DaskRunner's import costs about 1.4 s); one whose extra is not
# installed cannot be imported, and its options stay unknown.
RUNNER_OPTION_MODULES = ("apache_beam.runners.dask.dask_runner",)


def _runner_name(args: list[str]) -> str | None:
    """The ``--runner`` given in ``args`` (``--runner=X`` or ``--runner X``), or None."""
    for i, a in enumerate(args):
        if a.startswith("--runner="):
            return a.split("=", 1)[1]
        if a == "--runner" and i + 1 < len(args):
            return args[i + 1]
    return None


class BeamOptionNames:
    """Which options Beam knows, asked of Beam through its public options API.

    ``PipelineOptions.get_all_options`` builds one argparse parser from every registered
    ``PipelineOptions`` subclass (the parser Beam reads a job's options with) and hands it to its
    ``add_extra_args_fn`` callback before parsing: the callback keeps it, and every question is put to it
    with argparse's public ``parse_known_args``. A ``--runner`` named by module path (the DaskRunner, our
    LocalRunner) is imported first, as Beam imports it when the pipeline is made, so that its own options
    are registered; a runner that cannot be imported (its extra is not installed) is a
    :class:`UsageError` naming it.
    """

    def __init__(self, args: list[str]):
        runner = _runner_name(args)
        path = _RUNNER_ALIASES.get(runner, runner)
        if path and "." in path:
            module = path.rsplit(".", 1)[0]
            try:
                importlib.import_module(module)
            except ImportError as exc:
                hint = "; is Beam's extra for this runner installed (apache-beam[dask] for the DaskRunner)?"
                raise UsageError(
                    f"--runner {runner}: {module} cannot be imported ({exc})"
                    + (hint if module.startswith("apache_beam.") else "")
                ) from None
        self._parser = self._beam_parser()
        self._runner_modules_tried = False

    @staticmethod
    def _beam_parser():
        kept = []
        PipelineOptions([]).get_all_options(add_extra_args_fn=kept.append)
        return kept[0]

    def _parse(self, args: list[str]):
        """Beam's parser on ``args``: ``(namespace, unknown tokens)``; its complaint (a value it refuses)
        as a :class:`UsageError` with argparse's message, without the usage block it prints."""
        printed = io.StringIO()
        try:
            with contextlib.redirect_stderr(printed):
                return self._parser.parse_known_args(args)
        except SystemExit:
            lines = printed.getvalue().strip().splitlines() or ["error: bad Beam option"]
            raise UsageError(lines[-1].split("error: ", 1)[-1]) from None

    def _knows(self, name: str) -> bool:
        try:
            _, unknown = self._parse([name])
        except UsageError:
            return True  # it wants a value, or takes none: either way it knows the option
        return name not in unknown

    def knows(self, name: str) -> bool:
        """Whether Beam takes the option ``name`` (``--direct_num_workers``; exact name, no abbreviation)."""
        if self._knows(name):
            return True
        if not self._runner_modules_tried:
            self._runner_modules_tried = True
            for module in RUNNER_OPTION_MODULES:
                with contextlib.suppress(ImportError):
                    importlib.import_module(module)
            self._parser = self._beam_parser()
            return self._knows(name)
        return False

    @property
    def names(self) -> list[str]:
        """Beam's option names, for a "did you mean" hint: the ``--`` words of its parser's help text (argparse
        has no public list of a parser's options), each kept only when the parser knows it."""
        words = dict.fromkeys(re.findall(r"(?<![\w-])--[A-Za-z0-9][\w-]*", self._parser.format_help()))
        return [w for w in words if w != "--help" and self._knows(w)]  # probing --help would print the help

    def check(self, args: list[str]) -> None:
        """Raise :class:`UsageError` unless Beam's parser takes every token of ``args`` (values included)."""
        _, unknown = self._parse(list(args))
        if unknown:
            first = unknown[0]
            if first.startswith("-"):
                raise unknown_option(first.split("=", 1)[0], self.names)
            raise UsageError(f"unexpected argument {first!r}")


class LocalRunner(PipelineRunner):
    """The DirectRunner's batch engine (Beam's FnApiRunner), chosen without trying Prism first.

    Since Beam 2.6x the DirectRunner first tries the Prism runner, a Go binary it downloads from GitHub at
    run time; this runner does what the DirectRunner does after that attempt for a batch pipeline
    (:func:`beam_pipelines.common.tricks.run_on_fn_api_runner`, which says why and on which private API);
    ``--runner=DirectRunner`` still gets Beam's own, and so does every job with ``PING_LLM_PLAIN_RUNNER=1``.

    ``worker_log`` (set by :func:`run_to_completion`): a file that the worker processes' stderr is
    appended to in multi-process mode, instead of the launcher's terminal. Each worker prints there, before
    it has read its log level, a notice about optional Google clients and "Logging handler created", and
    then its tracebacks; its log records reach the launcher's logging anyway (Beam forwards them).
    """

    worker_log: str | None = None

    def run_pipeline(self, pipeline, options):
        return run_on_fn_api_runner(pipeline, options, self.worker_log)


def beam_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options from the pass-through arguments.

    Defaults, each only when the user said nothing about it: :class:`LocalRunner` (the DirectRunner's
    batch engine; Beam's ``DirectRunner`` with ``PING_LLM_PLAIN_RUNNER=1``) in multi-process mode with one
    worker per core; worker logs at ERROR (the SDK harness
    otherwise prints dozens of INFO lines per worker); and, on Dask, one created element per partition
    so every task can run on its own worker.
    """
    args = []
    for a in beam_args:
        if a.startswith("--runner="):
            name = a.split("=", 1)[1]
            a = f"--runner={_RUNNER_ALIASES.get(name, name)}"
        args.append(a)
    if "--runner" in args:  # `--runner NAME` as two words
        i = args.index("--runner")
        if i + 1 < len(args):
            args[i + 1] = _RUNNER_ALIASES.get(args[i + 1], args[i + 1])
    runner = next((a for a in args if a.startswith("--runner")), "")
    if not runner:
        args.append("--runner=DirectRunner" if plain(PLAIN_RUNNER) else f"--runner={LOCAL_RUNNER}")
        if not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=multi_processing")
            if not any(a.startswith("--direct_num_workers") for a in args):
                args.append("--direct_num_workers=0")  # one worker per core
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=ERROR")
    dask_partitioning = any(a.startswith(("--dask_npartitions", "--dask_partition_size")) for a in args)
    if "Dask" in " ".join(args) and not dask_partitioning:
        # The DaskRunner puts up to 128 created elements in one partition (one task): one unit each instead.
        args.append("--dask_partition_size=1")
    return PipelineOptions(args)


def run_to_completion(pipeline, worker_log: str | None = None) -> None:
    """Run ``pipeline``, wait for it, and release what the runner opened for it.

    The DaskRunner opens a ``distributed.Client`` of its own (and, without ``--dask_client_address``, a
    local cluster behind it) and leaves both open; left alone they outlive the job and log errors at
    interpreter exit. The client is closed whether the pipeline succeeded or not. ``worker_log``: where
    the :class:`LocalRunner`'s worker processes write their stderr (other runners ignore it).
    """
    if isinstance(pipeline.runner, LocalRunner):
        pipeline.runner.worker_log = worker_log
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:
            client.close()  # also closes a local cluster the client started
