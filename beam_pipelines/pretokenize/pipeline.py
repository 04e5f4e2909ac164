"""Pretokenize Parquet measurements into packed, fixed-length ArrayRecord splits plus a manifest.

    python -m beam_pipelines.pretokenize [--input GLOB] [--output DIR] [--seq_len 1024]
        [--split 80,10,10] [--split_by src|time] [--compression snappy] [--overwrite | --append]
        [any Beam pipeline option, e.g. --runner=DaskRunner --dask_client_address=HOST:PORT]

``--append`` adds the rows of inputs the dataset does not hold yet (by content sha256) as a new version:
new files beside the old ones (which are never rewritten), the manifest rewritten last with the new
version in its ``versions`` list (docs/pretokenize.md#appending-a-version).

Stages (each a named composite transform in :mod:`beam_pipelines.pretokenize.transforms`, a
``ptransform_fn`` over plain functions in :mod:`beam_pipelines.pretokenize.stages`): ReadAndEncode (per task of consecutive row groups and files, about 100k-1M rows: vectorized tokenizer, rejected
rows kept aside, accepted rows hash-partitioned by source into bucket files) -> GroupBySource (one bucket
at a time, sources in time order) -> PackRecords (whole measurements into seq_len records, padding near
the floor) -> WriteArrayRecords (temporary files, verified) -> WriteManifest (records renamed into place,
rejected rows gathered into a bounded number of files, manifest last). The default runner is the
DirectRunner: in one process (its ``in_memory`` mode) below :func:`one_process_rows` rows (2M on 2 cores,
about 1M on many; always on one core), else with one worker process per core. ``--in_process`` runs the same stage functions in this process without
Beam (:mod:`beam_pipelines.pretokenize.local`; same bytes, no start-up cost): for small appends, such as
the hourly update's (``beam_pipelines.update`` chooses it).

This module runs the job (:func:`run`); :mod:`~beam_pipelines.pretokenize.options` parses its options,
:mod:`~beam_pipelines.pretokenize.planning` plans it and :mod:`~beam_pipelines.pretokenize.append` prepares
an append; the run's lifecycle (writer lock, scratch, Beam's log, the failure report) is
:mod:`beam_pipelines.common.lifecycle`'s.

Every input, the output and the scratch location may be object-store URLs (``s3://``, ``gs://``; see
docs/object-storage.md). Scratch goes to ``OUT/_tmp``, or under Beam's ``--temp_location`` when given,
and is removed at the end whether the job succeeded or failed.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time

from beam_pipelines.common import storage
from beam_pipelines.common.cores import usable_cores
from beam_pipelines.common.errors import RunError, report
from beam_pipelines.common.lifecycle import JobRun, no_manifest, run_output_job
from beam_pipelines.common.output import OutputDir
from beam_pipelines.common.progress import Progress, sum_markers
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from beam_pipelines.pretokenize import stages
from beam_pipelines.pretokenize.append import dataset_to_append_to, inherit_options, remove_leftovers
from beam_pipelines.pretokenize.local import run_stages
from beam_pipelines.pretokenize.options import RUNNER_OPTIONS, Options, parse_args
from beam_pipelines.pretokenize.planning import output_rules, plan

# The scale of the DirectRunner's mode choice (one_process_rows): starting the worker processes of the
# multi-process mode costs about 3 s of wall time on 2 cores, what about 1M rows of per-row work take
# (docs/performance.md). The hourly update also uses it to choose --in_process for its appends.
SMALL_INPUT_ROWS = 1_000_000



def format_summary(manifest: dict, seconds: float | None) -> str:
    rows = manifest["rows"]
    lines = []
    head = f"rows read {rows['read']:,}, accepted {rows['accepted']:,}, rejected {rows['rejected']:,}"
    if seconds:
        head += f" in {seconds:,.1f} s ({rows['read'] / seconds:,.0f} rows/s)"
    lines.append(head)
    if manifest["rejected"]["by_reason"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in manifest["rejected"]["by_reason"].items())
        lines.append(f"  rejected by reason: {reasons} (rows kept in rejected/)")
    lines.append(f"  {'split':<6} {'records':>9} {'measurements':>13} {'tokens':>13} {'padding':>8} {'sources':>8} {'continuity':>10} files")
    total_tokens = total_pad = 0
    for name in SPLIT_NAMES:
        s = manifest["splits"][name]
        capacity = s["tokens"] + s["pad_tokens"]
        total_tokens += s["tokens"]
        total_pad += s["pad_tokens"]
        pad = f"{100 * s['pad_tokens'] / capacity:.2f}%" if capacity else "-"
        cont = f"{s['context_continuity']:.3f}" if s.get("context_continuity") is not None else "-"
        lines.append(
            f"  {name:<6} {s['records']:>9,} {s['measurements']:>13,} {s['tokens']:>13,} {pad:>8} {s['sources']:>8,} {cont:>10} {len(s['files'])}"
        )
    if total_tokens + total_pad:
        lines.append(f"  padding overall: {100 * total_pad / (total_tokens + total_pad):.2f}% of {total_tokens + total_pad:,} tokens")
    lines.append(f"  fingerprint {manifest['fingerprint']}")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    """Run the job; returns the process exit code (0 done or up to date, 1 failed, 2 bad input/options)."""
    return run_output_job(argv, parse_args, _run)


def _run(options: Options, beam_args: list[str], started: float, out_dir: OutputDir) -> int:
    if options.append:
        return _append(options, beam_args, started)
    tasks, ctx, _ = plan(options)
    skip = out_dir.prepare(output_rules(options, ctx.fingerprint), options.overwrite)
    if skip:
        print(skip)
        print(format_summary(manifest_lib.read_manifest(options.output), None))
        return 0
    return _write(options, beam_args, tasks, ctx, started)


def _append(options: Options, beam_args: list[str], started: float) -> int:
    """``--append`` into a locked ``--output``: the new inputs as the next version, or "nothing to do"."""
    existing = dataset_to_append_to(options.output)
    options = inherit_options(options, existing)
    removed = remove_leftovers(options.output, existing)
    if removed:
        print(f"note: removed {len(removed)} file(s) left by an interrupted run (not in the manifest)", file=sys.stderr)
    tasks, ctx, skipped = plan(options, existing)
    if skipped:
        print(f"skipping {skipped} input file(s) already in the dataset (same sha256)", file=sys.stderr)
    if ctx is None:
        print(f"{options.output} already holds every input (version {existing.get('version', 1)}); nothing to do")
        return 0
    return _write(options, beam_args, tasks, ctx, started)


def one_process_rows(cores: int) -> float:
    """Rows to encode below which the DirectRunner's one-process mode is the default on ``cores`` cores.

    The worker processes cost a fixed start-up and save the share ``(cores - 1) / cores`` of the per-row
    time, so they pay from about ``SMALL_INPUT_ROWS * cores / (cores - 1)`` rows: 2M on 2 cores (measured
    there: 1M rows 5.3 s in one process against 8.1 s with the workers, 2M rows 7.8 s against 8.9 s),
    1.07M on 16, never on one core."""
    return math.inf if cores <= 1 else SMALL_INPUT_ROWS * cores / (cores - 1)


def runner_args(beam_args: list[str], rows: int, cores: int | None = None) -> list[str]:
    """Beam's options for a job of ``rows`` input rows: as given, plus the DirectRunner's one-process mode
    (``--direct_running_mode=in_memory``) for fewer than :func:`one_process_rows` rows (``cores``: default
    :func:`~beam_pipelines.common.cores.usable_cores`) when no runner option is given (``common.options`` adds the multi-process
    default otherwise). The output does not depend on it."""
    cores = usable_cores() if cores is None else cores
    if rows < one_process_rows(cores) and not any(a.startswith(RUNNER_OPTIONS) for a in beam_args):
        return [*beam_args, "--direct_running_mode=in_memory"]
    return list(beam_args)


def _write(options: Options, beam_args: list[str], tasks, ctx: stages.JobContext, started: float) -> int:
    """Run the pipeline into a prepared, locked ``--output``; returns the exit code."""
    total_rows = sum(i["rows"] for i in ctx.inputs)
    local = options.in_process
    as_version = f" (version {ctx.version})" if ctx.version > 1 else ""
    print(
        f"pretokenize: {total_rows:,} rows in {len(ctx.inputs)} file(s), {len(tasks)} task(s), "
        f"{ctx.num_buckets} bucket(s) -> {options.output}{as_version}"
        + (" in this process, without Beam (--in_process)" if local else ""),
        file=sys.stderr,
    )
    unchanged = (
        f"{options.output} still holds version {ctx.version - 1}, unchanged"
        if ctx.version > 1
        else f"{options.output} does not hold a dataset"
    )
    job = JobRun("pretokenize", ctx.tmp, separate_log=bool(ctx.scratch))
    encoded = functools.partial(sum_markers, os.path.join(ctx.tmp, "progress"), "encode-*.json", "rows")
    try:
        with Progress("pretokenize", encoded, total_rows, unit="rows", label="encoded"):
            if local:
                run_stages(tasks, ctx)
            else:
                args = runner_args(beam_args, total_rows)
                # Beam imported here, not at the top: the 1.5-2.6 s of start-up that --in_process saves.
                from beam_pipelines.common import joblog
                from beam_pipelines.pretokenize.transforms import build_pipeline

                joblog.run_pipeline(args, lambda pipeline: build_pipeline(pipeline, tasks, ctx), job.log)
    except Exception as exc:  # noqa: BLE001 - any pipeline failure ends the job the same way
        from beam_pipelines.common.joblog import pipeline_error  # Beam too; a failure's cost does not matter

        return job.failed(
            RunError(f"pretokenize failed: {pipeline_error(exc)}"),
            f"no manifest was written; {unchanged}",
            traceback_of=exc if local else None,  # the traceback goes where the pipeline's log would have it
        )
    nothing = os.path.join(ctx.tmp, stages.NOTHING_ENCODED)
    if storage.exists(nothing):  # no row could be encoded: no dataset, no manifest (see stages.finalize)
        counts = storage.read_json(nothing)
        job.finished()
        reasons = ", ".join(f"{k} {v:,}" for k, v in counts["by_reason"].items())
        where = os.path.join(options.output, stages.REJECTED_DIR)
        return report(
            RunError(f"no row could be encoded: all {counts['read']:,} rows were rejected ({reasons})"),
            f"the rows and their reasons are in {where}; no manifest was written" + ("" if ctx.version == 1 else f"; {unchanged}"),
        )
    job.finished()
    try:
        manifest = manifest_lib.read_manifest(options.output)
    except manifest_lib.ManifestError as exc:
        return no_manifest(exc)
    seconds = time.monotonic() - started
    if ctx.version > 1:
        mine = manifest_lib.dataset_versions(manifest)[-1]
        print(
            f"appended version {ctx.version}: {mine['rows']['read']:,} rows read, {mine['rows']['accepted']:,} "
            f"accepted, {mine['rows']['rejected']:,} rejected in {seconds:,.1f} s; totals over all versions:"
        )
        seconds = None  # the totals' rows were not all read by this run
    print(format_summary(manifest, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(run())
