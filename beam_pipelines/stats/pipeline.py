"""Dataset reports: statistics of raw Parquet pings, or of a pretokenized dataset.

    python -m beam_pipelines.stats --input GLOB --output REPORT_DIR [Beam options]
    python -m beam_pipelines.stats --dataset DIR [--version N] --output REPORT_DIR [--workers N]

Writes ``report.json`` (machine-readable, deterministic), ``report.md`` (tables like the seed's
"Dataset Info") and ``report.html`` (one self-contained page, plots embedded as PNG) to REPORT_DIR.

``--input`` runs a Beam pipeline (same runners and options as pretokenize: Beam's own options go to
Beam, any other is refused; by default the DirectRunner on every core): ReadParquetBatches (tasks of consecutive row groups, Arrow
batches) -> SummarizeBatches (one mergeable summary per batch, numpy/pyarrow only) ->
CombineSummaries (a CombineFn merging summaries) -> WriteSummary. ``--dataset`` reads every record of
every file of a pretokenized dataset in parallel processes and checks it against the manifest; with
``--version N`` the dataset as it stood at version N (its files and those of earlier versions; default the
latest, see ``pretokenize --append``).

Bad input (no match, not Parquet, a missing column, no manifest, a file that disagrees with the
manifest) ends the job with one message naming the file and column, exit status 2, and no report.

Inputs, ``--dataset`` and ``--output`` may be object-store URLs (``s3://``, ``gs://``; docs/object-storage.md).
A remote ``--dataset`` is first copied into the local cache and verified (``beam_pipelines.dataset.staging``),
as the trainer does. Scratch (progress markers, the merged summary) goes under ``--temp_location`` when
given, else ``OUTPUT/.stats_tmp``, and is removed at the end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import math
import multiprocessing
import os
import pickle
import sys
import time

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.ptransform import ptransform_fn

from beam_pipelines.common import joblog, object_store, storage
from beam_pipelines.common.cli import StrictArgumentParser, parse_job_args
from beam_pipelines.common.errors import InputError, RunError, UsageError
from beam_pipelines.common.files import atomic_path
from beam_pipelines.common.lifecycle import (
    LOG_NAME,
    JobRun,
    beam_storage_options,
    run_output_job,
    scratch_under,
)
from beam_pipelines.common.output import OutputDir
from beam_pipelines.common.parquet import plan_tasks, resolve_inputs
from beam_pipelines.common.progress import Progress, sum_markers, write_marker
from beam_pipelines.common.transforms import ReadParquetBatches
from beam_pipelines.dataset import dataset_versions, read_manifest, select_version
from beam_pipelines.dataset.staging import stage_dataset
from beam_pipelines.stats import dataset as stats_dataset
from beam_pipelines.stats import raw as stats_core
from beam_pipelines.stats import render as stats_render
from tokenizer import TokenizerMismatch, check_tokenizer

REPORT_FILES = ("report.json", "report.md", "report.html")
_TMP_DIR = ".stats_tmp"
MAX_RANK_ERROR = 0.005  # quantile rank error the reports promise; the summary warns past it
SMALL_DATASET_RECORDS = 1 << 15  # --dataset reads smaller datasets in one process unless --workers says otherwise



# --- Beam stages -----------------------------------------------------------------------------------


class _SummarizeBatchFn(beam.DoFn):
    """(task, rows of the task before the batch, batch) -> the batch's summary; leaves a progress marker per task."""

    def __init__(self, limits: stats_core.Limits, progress_dir: str | None, fs_options: dict | None = None):
        self._limits = limits
        self._progress_dir = progress_dir
        self._fs_options = dict(fs_options or {})
        self._rows = Metrics.counter("stats", "rows")

    def setup(self):
        if self._fs_options:
            object_store.configure(self._fs_options)

    def process(self, element):
        task, done, batch = element
        summary = stats_core.summarize_batch(batch, self._limits)
        self._rows.inc(batch.num_rows)
        if self._progress_dir:
            write_marker(self._progress_dir, task.task_id, rows=done + batch.num_rows)
        yield summary


class _MergeSummariesFn(beam.CombineFn):
    """Merges per-batch :class:`~beam_pipelines.stats.raw.RawStats`; accumulators are summaries too."""

    def __init__(self, limits: stats_core.Limits):
        self._limits = limits

    def create_accumulator(self):
        return stats_core.RawStats(self._limits)

    def add_input(self, accumulator, summary):
        return accumulator.merge(summary)

    def merge_accumulators(self, accumulators):
        # Into a new summary, not into the first one: on Dask the accumulators are results that another
        # thread of the worker may be pickling for another worker at the same time (RawStats.merge only
        # reads its argument).
        out = self.create_accumulator()
        for other in accumulators:
            out.merge(other)
        return out

    def compact(self, accumulator):
        return accumulator.compact()  # this bundle's own accumulator, before it is shipped

    def extract_output(self, accumulator):
        return self.merge_accumulators([accumulator]).compact()


@ptransform_fn
def SummarizeBatches(batches, limits: stats_core.Limits, progress_dir: str | None = None, fs_options: dict | None = None):
    """``(task, first_row, RecordBatch)`` -> one :class:`~beam_pipelines.stats.raw.RawStats` per batch."""
    return batches | "SummarizeBatch" >> beam.ParDo(_SummarizeBatchFn(limits, progress_dir, fs_options))


@ptransform_fn
def CombineSummaries(summaries, limits: stats_core.Limits):
    """Per-batch summaries -> exactly one merged summary (the empty one when there are no rows)."""
    return summaries | "MergeSummaries" >> beam.CombineGlobally(_MergeSummariesFn(limits))


@ptransform_fn
def RawParquetStats(pbegin, tasks, limits: stats_core.Limits, progress_dir: str | None = None, fs_options: dict | None = None):
    """PBegin -> one merged summary of every row of the planned row groups."""
    return (
        pbegin
        | "ReadParquetBatches" >> ReadParquetBatches(tasks, fs_options=fs_options)
        | "SummarizeBatches" >> SummarizeBatches(limits, progress_dir, fs_options)
        | "CombineSummaries" >> CombineSummaries(limits)
    )


def _write_summary(summary, path: str, fs_options: dict | None = None) -> str:
    if fs_options:
        object_store.configure(fs_options)
    # Locally through a temporary name and a rename; in an object store one upload, its size checked.
    storage.write_bytes(path, pickle.dumps(summary, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def build_pipeline(
    pipeline: beam.Pipeline,
    tasks,
    limits: stats_core.Limits,
    summary_path: str,
    progress_dir: str | None = None,
    fs_options: dict | None = None,
):
    """Attach the raw stats stages; the last step (the only sink) writes the merged summary to ``summary_path``."""
    return (
        pipeline
        | "RawParquetStats" >> RawParquetStats(tasks, limits, progress_dir, fs_options)
        | "WriteSummary" >> beam.Map(_write_summary, summary_path, fs_options)
    )


# --- progress --------------------------------------------------------------------------------------


# --- the two jobs ----------------------------------------------------------------------------------


def raw_stats(
    pattern: str, tmp: str, beam_args: list[str], limits: stats_core.Limits, log: str | None = None
) -> tuple[dict, int]:
    """Run the Beam pipeline over ``pattern`` (scratch in ``tmp``, Beam's log at ``log``, default in
    ``tmp``); returns (report dict, rows)."""
    fs_options = object_store.current_options()
    files = resolve_inputs(pattern, fingerprint=False)
    tasks = plan_tasks(files)
    total = sum(f.rows for f in files)
    print(f"[stats] {total:,} rows in {len(files)} file(s), {len(tasks)} task(s)", file=sys.stderr, flush=True)
    progress_dir = os.path.join(tmp, "progress")
    storage.makedirs(progress_dir)
    summary_path = os.path.join(tmp, "summary.pkl")
    read = functools.partial(sum_markers, progress_dir, "*.json", "rows")
    try:
        with Progress("stats", read, total, unit="rows", label="read:"):
            joblog.run_pipeline(
                beam_args,
                lambda pipeline: build_pipeline(pipeline, tasks, limits, summary_path, progress_dir, fs_options),
                log or os.path.join(tmp, LOG_NAME),
            )
    except Exception as exc:
        # Bad input found only while reading (a damaged row group) is still bad input, not a crash.
        if isinstance(exc, InputError) or "InputError" in str(exc) or "SchemaError" in str(exc):
            raise InputError(joblog.pipeline_error(exc)) from exc
        raise RunError(joblog.pipeline_error(exc)) from exc
    summary = pickle.loads(storage.read_bytes(summary_path))
    if summary.rows != total:
        raise RunError(f"the pipeline summarized {summary.rows:,} rows but the inputs hold {total:,}")
    inputs = [{"path": f.path, "bytes": f.bytes, "rows": f.rows} for f in files]
    return stats_core.raw_report(summary, inputs, pattern), total


def _summarize_file_job(job):
    directory, split, entry, seq_len, tokenizer = job
    return split, stats_dataset.summarize_file(directory, split, entry, seq_len, tokenizer)


def dataset_stats(directory: str, workers: int, version: int | None = None) -> tuple[dict, int]:
    """Read every record of a pretokenized dataset at ``version`` (None: the latest; files in parallel);
    returns (report dict, records).

    A dataset in an object store is read from its verified local copy (made now, or found from earlier)."""
    named = directory
    # A remote dataset is staged up to that version only (an unknown version is refused before anything
    # is downloaded); the staged copy's manifest then ends at it.
    directory = stage_dataset(directory, version=version)
    manifest = select_version(read_manifest(directory), version, root=named)
    try:
        scheme = check_tokenizer(manifest["tokenizer"], manifest["seq_len"])  # the one tokenizer check
    except TokenizerMismatch as exc:
        raise InputError(f"{named}: {exc}") from exc
    jobs = stats_dataset.file_jobs(directory, manifest)
    total = sum(job[2]["records"] for job in jobs)
    if not workers:
        # Starting processes costs about a second; below this size one process is faster.
        workers = 1 if total < SMALL_DATASET_RECORDS else (os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    print(f"[stats] {total:,} records in {len(jobs)} file(s), {workers} process(es)", file=sys.stderr, flush=True)
    per_split = {name: stats_dataset.RecordStats(manifest["seq_len"], vocab_size=scheme.vocab_size)
                 for name in manifest["splits"]}
    # The manifest counts a split's sources per version and sums them (a source in two versions counts
    # twice), so the check needs each version's distinct sources too.
    version_of = {f["path"]: v["version"] for v in dataset_versions(manifest) for sp in v["splits"].values() for f in sp["files"]}
    sources: dict[tuple[int, str], object] = {}
    done = [0]
    with Progress("stats", lambda: done[0], total, unit="records", label="records:"):
        if workers == 1:
            for job, (split, stats) in zip(jobs, map(_summarize_file_job, jobs)):
                _merge_sources(sources, version_of.get(job[2]["path"], 1), split, stats)
                per_split[split].merge(stats)
                done[0] += stats.records
        else:
            # spawn, not fork: the parent may hold threads (progress) and Beam/Arrow state.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = [pool.submit(_summarize_file_job, job) for job in jobs]
                # Merge in manifest order (not completion order); the figures do not depend on it anyway.
                for job, future in zip(jobs, futures):
                    split, stats = future.result()
                    _merge_sources(sources, version_of.get(job[2]["path"], 1), split, stats)
                    per_split[split].merge(stats)
                    done[0] += stats.records
    summed = None
    if len(dataset_versions(manifest)) > 1:
        summed = {name: sum(len(s) for (_, n), s in sources.items() if n == name) for name in manifest["splits"]}
    return stats_dataset.dataset_report(named, manifest, per_split, summed_sources=summed), total


def _merge_sources(sources: dict, version: int, split: str, stats) -> None:
    """Union of one file's distinct sources into its (version, split)'s."""
    key = (version, split)
    sources[key] = stats.sources if key not in sources else np.union1d(sources[key], stats.sources)


# --- outputs ---------------------------------------------------------------------------------------


def write_reports(report: dict, output: str, html: bool = True) -> list[str]:
    """Render and write the report files: each to a temporary name first, all renamed at the end."""
    texts = {
        "report.json": json.dumps(report, indent=2, allow_nan=False) + "\n",
        "report.md": stats_render.render_markdown(report),
    }
    if html:
        try:
            texts["report.html"] = stats_render.render_html(report)
        except stats_render.MissingMatplotlib as exc:
            print(f"[stats] skipping report.html: {exc}", file=sys.stderr)
    if storage.is_remote(output):
        # Every text is rendered before the first upload, so a rendering error leaves no report; each file
        # is one upload (an object appears whole or not at all), its size checked.
        for name, text in texts.items():
            storage.write_bytes(os.path.join(output, name), text.encode("utf-8"))
    else:
        with contextlib.ExitStack() as renames:  # renamed when every file is written; none if one fails
            for name, text in texts.items():
                with open(renames.enter_context(atomic_path(os.path.join(output, name))), "w", encoding="utf-8") as f:
                    f.write(text)
    written = []
    for name in REPORT_FILES:
        target = os.path.join(output, name)
        if name in texts:
            written.append(target)
        else:
            storage.remove(target)  # a stale page from an earlier report would contradict this one
    return written


def _json_safe(obj):
    """NaN (e.g. quantiles of nothing) becomes null, so report.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def summary_line(report: dict) -> str:
    """A few lines for the terminal."""
    if report["report"] == "parquet":
        rtt = report["rtt_ms"]
        quant = (
            ", ".join(f"{p} {stats_render.ms(rtt[p])}" for p in ("p50", "p90", "p99"))
            + ("" if rtt["exact"] else " (binned)")
            if rtt.get("count")
            else "no successful pings"
        )
        worst = max(rtt.get("rank_error_bound", {}).values(), default=0.0)
        warning = (
            f"\nwarning: a quantile's rank error bound is {100 * worst:.2f}% (> 0.5%); raise --quantile_limit"
            if worst > MAX_RANK_ERROR
            else ""
        )
        return (
            f"rows {report['rows']:,} (IPv4 {report['ipv4_rows']:,}, IPv6 {report['ipv6_rows']:,}, failed {report['failed_rows']:,}, "
            f"tokenizer would reject {report['rejected_rows']:,}); distinct msm_id {report['distinct_msm_id']:,}, "
            f"src {report['distinct_src_addr']:,}, dst {report['distinct_dst_addr']:,}; RTT {quant}" + warning
        )
    t = report["totals"]
    line = (
        f"records {t['records']:,}, measurements {t['measurements']:,}, tokens {t['tokens']:,}, "
        f"padding {100 * (t['pad_fraction'] or 0):.2f}%, sources {t['sources']:,}"
    )
    if not report["checks"]["manifest_agrees"]:
        line += "\nwarning: the records disagree with the manifest: " + "; ".join(report["checks"]["mismatches"])
    return line


def parse_args(argv):
    parser = StrictArgumentParser(
        prog="python -m beam_pipelines.stats",
        description="Write report.json, report.md and report.html about raw Parquet pings (--input, a Beam job) "
        "or a pretokenized dataset (--dataset). Apache Beam's own options are passed to Beam; any other "
        "option is refused (exit 2).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="Parquet file, directory or glob of raw pings")
    source.add_argument("--dataset", help="directory of a pretokenized dataset (with manifest.json)")
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="--dataset: report the dataset as it stood at this version (default: the latest)",
    )
    parser.add_argument("--output", required=True, help="directory for report.json, report.md, report.html")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="--dataset: processes reading files (default: one per core, or one for a small dataset)",
    )
    parser.add_argument("--top", type=int, default=stats_core.Limits.top, help="entries in each top list (default 20)")
    parser.add_argument(
        "--distinct_limit",
        type=int,
        default=stats_core.Limits.distinct,
        help="distinct values per column counted exactly before switching to HyperLogLog (default 1048576)",
    )
    parser.add_argument(
        "--quantile_limit",
        type=int,
        default=stats_core.Limits.quantile,
        help="distinct RTT values kept exactly before switching to fine log bins (default 262144)",
    )
    parser.add_argument("--no_html", action="store_true", help="skip report.html (and matplotlib)")
    args, beam_args = parse_job_args(parser, argv)
    if args.version is not None and args.dataset is None:
        raise UsageError("--version applies to --dataset only")
    if args.dataset is not None and beam_args:
        raise UsageError(f"unknown option(s) {' '.join(beam_args)} (Beam options apply to --input only)")
    if args.distinct_limit < 1 or args.quantile_limit < 2 or args.top < 0 or args.workers < 0:
        raise UsageError("--distinct_limit must be >= 1, --quantile_limit >= 2, --top and --workers >= 0")
    args.temp_location, args.fs_options = beam_storage_options(beam_args)
    return args, beam_args


def run(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit status (0 done, 1 failed, 2 bad input or options)."""
    return run_output_job(argv, parse_args, _report)


def _report(args, beam_args: list[str], started: float, out_dir: OutputDir) -> int:
    """Compute and write the reports into the locked ``out_dir``; returns the exit status."""
    output = args.output
    temp_location = args.temp_location
    tmp = scratch_under(temp_location, "stats")
    if not tmp:
        # Absolute when local: workers (other processes, maybe another working directory) write the
        # summary there.
        tmp = storage.join(output, _TMP_DIR) if storage.is_remote(output) else os.path.abspath(os.path.join(output, _TMP_DIR))
    job = JobRun("stats", tmp, separate_log=bool(temp_location))
    no_report = f"no report was written to {output}"
    try:
        if args.input is not None:
            limits = stats_core.Limits(distinct=args.distinct_limit, quantile=args.quantile_limit, top=args.top)
            result, units = raw_stats(args.input, tmp, beam_args, limits, job.log)
            unit = "rows"
        else:
            result, units = dataset_stats(args.dataset, args.workers, args.version)
            unit = "records"
        result = _json_safe(result)
        written = write_reports(result, output, html=not args.no_html)
    except InputError as exc:
        return job.failed(exc, no_report)
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback through Beam
        text = str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"
        return job.failed(RunError(f"stats failed: {text}"), no_report)
    job.finished()
    seconds = time.monotonic() - started
    print(summary_line(result))
    print(f"{units:,} {unit} in {seconds:,.1f} s ({units / seconds:,.0f} {unit}/s); wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
