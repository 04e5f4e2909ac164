"""Ingest RIPE Atlas ping results (daily dumps or API downloads) into Parquet shards in the seed's schema.

    python -m beam_pipelines.ingest_atlas --input GLOB --output DIR [--rtt min|avg|each] [--src from|src_addr]
        [--shard_rows 1000000] [--overwrite | --append] [any Beam pipeline option, e.g. --runner=DaskRunner]

Inputs: ``.bz2``, ``.gz``, ``.xz`` or plain files (told apart by their first bytes), each JSON lines (the
daily dumps ``ping-YYYY-MM-DDTHH00.bz2``) or a JSON array (API downloads), read as streams. Output:
``DIR/part-NNNNN-of-NNNNN.parquet`` (zstd, :data:`beam_pipelines.ingest_atlas.convert.ROW_SCHEMA`, rows in input file
then line order), ``DIR/rejected/rejected-NNNNN-of-NNNNN.parquet`` (file, line_number, reason, raw_line),
``DIR/manifest.json`` (counts, shards with sha256) and, last, ``DIR/_SUCCESS``.

Stages (composite PTransforms over plain functions in the modules beside this one): ReadAtlasResults (one work unit per
file, or per byte range of the text of a large plain file or indexed bz2 file: stream, convert, write Arrow fragments) ->
PlanShards (a barrier: global row positions -> fixed-size shards) -> WriteParquetShards -> WriteManifest.

Inputs and ``--output`` may be object-store URLs (``s3://``, ``gs://``; docs/object-storage.md): shards are
written on the worker's disk, uploaded and checked (size, sha256); fragments and progress markers go to
``--temp_location`` when given, else ``DIR/_tmp_ingest``, removed at the end; ``_SUCCESS`` comes last.

``--append`` converts only the input files the output has not converted before (same path, size and sha256;
a file with the content of a converted one is skipped too) into new shards (``part-vNNNNN-...``) of a new
version listed in the manifest; earlier shards are never rewritten. A known path whose size or sha256
changed is refused. The manifest is replaced (atomically) only once the new shards are written and checked,
so a crash leaves the previous version; the rerun removes the unlisted files and completes the append.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import ClassVar

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.ptransform import ptransform_fn

from beam_pipelines.common import joblog, lifecycle, storage
from beam_pipelines.common.cli import StrictArgumentParser, add_output_modes, fields_from, parse_job_args
from beam_pipelines.common.errors import RunError, UsageError
from beam_pipelines.common.lifecycle import (
    JobRun,
    beam_storage_options,
    no_manifest,
    run_output_job,
    scratch_under,
)
from beam_pipelines.common.output import OutputDir, OutputRules
from beam_pipelines.common.progress import Progress, sum_markers
from beam_pipelines.common.transforms import GatherAll, StageFn, WriteManifest, create_spread
from beam_pipelines.ingest_atlas import append, discovery, read_unit, shards
from beam_pipelines.ingest_atlas.convert import RTT_MODES, SRC_MODES
from beam_pipelines.ingest_atlas.fragments import UnitSummary

_OWN_FILES = {
    shards.MANIFEST_NAME,
    shards.MANIFEST_NAME + ".tmp",
    shards.SUCCESS_NAME,
    shards.SUCCESS_NAME + ".tmp",
    shards.REJECTED_DIR,
    shards.TMP_DIR,
}



@dataclasses.dataclass(frozen=True, kw_only=True)
class JobContext(lifecycle.JobContext):
    """Everything an ingest worker needs (pickled into the DoFns); the fields every job shares (output,
    scratch, storage options, version) are :class:`~beam_pipelines.common.lifecycle.JobContext`'s."""

    TMP_DIR: ClassVar[str] = shards.TMP_DIR

    rtt: str
    src: str
    shard_rows: int
    row_group_rows: int
    batch_rows: int
    inputs: tuple  # dicts: index, path, bytes, compression
    options: dict  # the options that shape the output (recorded in the manifest)
    append: bool = False  # --append: the manifest gets `versions`, and version N > 1 extends the previous one


# --- Beam adapters -----------------------------------------------------------------------------------


class _IngestUnitFn(StageFn):
    def __init__(self, ctx: JobContext):
        super().__init__(ctx)
        self._records = Metrics.counter("ingest_atlas", "records")
        self._rows = Metrics.counter("ingest_atlas", "rows")

    def process(self, unit):
        ctx = self._ctx
        summary = read_unit.ingest_unit(unit, ctx.tmp, ctx.rtt, ctx.src, ctx.batch_rows)
        self._records.inc(summary.records)
        self._rows.inc(summary.rows)
        yield summary


class _WriteShardFn(StageFn):
    def process(self, element):
        if isinstance(element, UnitSummary):  # unit summaries ride along to the manifest
            yield element
        else:
            yield shards.write_shard(element, self._ctx.output, self._ctx.row_group_rows)


def _plan(units: list[UnitSummary], ctx: JobContext) -> list:
    """The unit summaries, then the shard specs planned from them."""
    return [*units, *shards.plan_shards(units, ctx.shard_rows, ctx.version)]


def _finalize(summaries: list, ctx: JobContext) -> dict:
    """Manifest, then ``_SUCCESS``, then the temporary fragments go.

    With ``--append`` to version N > 1 the previous manifest is read again (the writer lock has kept it as
    the driver found it) and this run's files are added to it as version N; the manifest is replaced in
    one atomic write, so until then the output is version N - 1, complete.
    """
    ctx.configure_storage()
    units = [s for s in summaries if isinstance(s, UnitSummary)]
    written = [s for s in summaries if isinstance(s, shards.ShardSummary)]
    manifest = shards.build_manifest(units, written, ctx.inputs, ctx.options)
    if ctx.version == 1:
        manifest["fingerprint"] = _fingerprint(ctx)
    else:
        manifest["fingerprint"] = shards.version_fingerprint(ctx.previous_fingerprint, ctx.inputs, ctx.options)
    if ctx.append:
        previous = None
        if ctx.version > 1:
            previous = storage.read_json(os.path.join(ctx.output, shards.MANIFEST_NAME))
            if previous.get("fingerprint") != ctx.previous_fingerprint:
                raise RuntimeError(f"{ctx.output}: the manifest changed while this append ran")
        manifest = shards.append_version(previous, manifest, ctx.created)
    storage.write_json(os.path.join(ctx.output, shards.MANIFEST_NAME), manifest)
    success = {"fingerprint": manifest["fingerprint"]}
    storage.write_json(os.path.join(ctx.output, shards.SUCCESS_NAME), success)  # last
    storage.rmtree(ctx.tmp)
    return manifest


@ptransform_fn
def ReadAtlasResults(pbegin, units, ctx: JobContext):
    """PBegin -> one :class:`UnitSummary` per work unit; its rows and rejected lines are in
    fragment files."""
    spread = create_spread(pbegin, units, "CreateWorkUnits", "SpreadWorkUnits")
    return spread | "IngestWorkUnit" >> beam.ParDo(_IngestUnitFn(ctx))


@ptransform_fn
def PlanShards(summaries, ctx: JobContext):
    """Unit summaries -> shard specs (and the unit summaries again): a barrier, since a shard's rows are
    known only once every unit before it is done."""
    return summaries | "GatherUnitSummaries" >> GatherAll() | "PlanShardSpecs" >> beam.FlatMap(_plan, ctx)


@ptransform_fn
def WriteParquetShards(specs, ctx: JobContext):
    """Shard specs -> one Parquet file each (temporary name, then renamed) -> its :class:`~shards.ShardSummary`."""
    return specs | "SpreadShards" >> beam.Reshuffle() | "WriteShard" >> beam.ParDo(_WriteShardFn(ctx))


def build_pipeline(pipeline: beam.Pipeline, units, ctx: JobContext):
    """Attach the ingest stages to ``pipeline``; returns the manifest PCollection."""
    return (
        pipeline
        | "ReadAtlasResults" >> ReadAtlasResults(units, ctx)
        | "PlanShards" >> PlanShards(ctx)
        | "WriteParquetShards" >> WriteParquetShards(ctx)
        | "WriteManifest" >> WriteManifest(_finalize, ctx)  # the manifest, then _SUCCESS, last
    )


# --- options, planning, output directory -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    """Parsed job options (the non-Beam ones)."""

    inputs: tuple[str, ...]
    output: str
    rtt: str
    src: str
    shard_rows: int
    split_bytes: int
    overwrite: bool
    append: bool = False  # --append: add the files not converted before as a new version
    given: tuple[str, ...] = ()  # the shaping options given on the command line (rtt, src, shard_rows)
    temp_location: str = ""  # Beam's --temp_location (scratch goes there when given)
    fs_options: dict = dataclasses.field(default_factory=dict)  # Beam's filesystem options (S3, GCS)


def parse_args(argv) -> tuple[Options, list[str]]:
    parser = StrictArgumentParser(
        prog="python -m beam_pipelines.ingest_atlas",
        description="Convert RIPE Atlas ping results (JSON lines or JSON arrays; bz2, gz, xz or plain) into "
        "Parquet shards in the seed's schema. Apache Beam's own options (e.g. --runner) are passed to Beam; "
        "any other option is refused (exit 2).",
    )
    parser.add_argument("--input", action="append", required=True, help="file, directory or glob; may be repeated")
    parser.add_argument("--output", required=True, help="output directory")
    # Defaults are filled in below, so that --append can tell an option given from one left out.
    parser.add_argument("--rtt", choices=RTT_MODES, help="min (default) or avg RTT per result, or one row per packet")
    parser.add_argument("--src", choices=SRC_MODES, help="source address: from (public, default) or src_addr (local)")
    parser.add_argument("--shard_rows", type=int, help="rows per Parquet shard (default 1000000)")
    parser.add_argument(
        "--split_bytes",
        type=int,
        default=discovery.DEFAULT_SPLIT_BYTES,
        help="read plain JSON-lines files in ranges of this many bytes, in parallel (default 64 MiB); "
        "no effect on the output",
    )
    add_output_modes(
        parser,
        overwrite="replace a previous result in --output",
        append="convert only the input files --output has not converted before, into a new version "
        "(creates --output when it holds no result yet)",
    )
    args, beam_args = parse_job_args(parser, argv)
    given = tuple(k for k in ("rtt", "src", "shard_rows") if getattr(args, k) is not None)
    args.rtt = args.rtt or "min"
    args.src = args.src or "from"
    args.shard_rows = shards.DEFAULT_SHARD_ROWS if args.shard_rows is None else args.shard_rows
    if args.shard_rows < 1 or args.split_bytes < 1:
        raise UsageError("--shard_rows and --split_bytes must be positive")
    if args.append and args.overwrite:
        raise UsageError("--append and --overwrite cannot be combined: --append never rewrites earlier shards")
    temp_location, fs_options = beam_storage_options(beam_args)
    options = fields_from(  # output, rtt, src, shard_rows, split_bytes, overwrite and append as parsed
        Options, args, inputs=tuple(args.input), given=given, temp_location=temp_location, fs_options=fs_options
    )
    return options, beam_args


def _fingerprint(ctx: JobContext) -> str:
    payload = {"inputs": [{"path": i["path"], "bytes": i["bytes"]} for i in ctx.inputs], "options": ctx.options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan(options: Options, paths: list[str] | None = None, previous: dict | None = None):
    """Find and inspect the inputs; returns the work units and the job context. Raises InputError.

    ``paths``: the files to convert, already found (``--append``: the new ones); ``previous``: the manifest
    this run appends a version to (None: version 1).
    """
    if paths is None:
        paths = discovery.expand_inputs(options.inputs)
    first = len(previous["inputs"]) if previous else 0
    files = discovery.inspect_inputs(paths, first)
    hashes = discovery.hash_inputs([f.path for f in files], sum(f.bytes for f in files))
    # A large bz2 file is indexed (one decode, on every core) so that its text splits like a plain file's.
    files = discovery.index_bz2_files(files, min(options.split_bytes, discovery.BZ2_SPLIT_BYTES))
    units = discovery.plan_units(files, options.split_bytes)
    inputs = tuple(
        {"index": f.index, "path": f.path, "bytes": f.bytes, "compression": f.compression, "sha256": hashes[f.path]}
        for f in files
    )
    version = len(shards.versions(previous)) + 1 if previous else 1
    ctx = fields_from(  # output, fs_options, rtt, src, shard_rows and append as the options say
        JobContext,
        options,
        row_group_rows=shards.ROW_GROUP_ROWS,
        batch_rows=read_unit.BATCH_ROWS,
        inputs=inputs,
        options={
            "rtt": options.rtt,
            "src": options.src,
            "shard_rows": options.shard_rows,
            "row_group_rows": shards.ROW_GROUP_ROWS,
        },
        scratch=scratch_under(options.temp_location, "ingest"),
        version=version,
        created=shards.created_now() if options.append else "",
        previous_fingerprint=previous["fingerprint"] if previous else None,
    )
    return units, ctx


def _is_own(name: str) -> bool:
    return name in _OWN_FILES or shards.is_shard_name(name) or shards.is_shard_name(name.removesuffix(".tmp"))


def output_rules(options: Options) -> OutputRules:
    """What this job may find in ``--output``: a complete result (``_SUCCESS``) is replaced only with
    ``--overwrite``, and so is a directory holding files this job does not write."""

    def complete(overwrite: bool) -> None:
        if not overwrite:
            raise UsageError(f"{options.output} already holds a complete ingest result; pass --overwrite to replace it")

    return OutputRules(
        is_own=_is_own,
        markers=(shards.SUCCESS_NAME, shards.MANIFEST_NAME, shards.MANIFEST_NAME + ".tmp"),
        complete=complete,
        foreign="{out} holds files this job did not write ({names}); choose another --output or pass --overwrite",
    )


# --- progress and summary ----------------------------------------------------------------------------


def format_summary(manifest: dict, seconds: float | None = None) -> str:
    """The end-of-job report: lines, results, rows, skipped by type, rejected by reason, rate."""
    t = manifest["totals"]
    inputs = manifest["inputs"]
    lines = [
        f"inputs        {len(inputs)} file(s), {sum(i['bytes'] for i in inputs) / 1e6:,.1f} MB",
        f"lines read    {t['lines']:,} ({t['blank_lines']:,} blank), {t['records']:,} JSON values",
        f"results       {t['converted']:,} ping results converted",
        f"rows written  {t['rows']:,} (--rtt {manifest['options']['rtt']}, --src {manifest['options']['src']}) "
        f"in {len(manifest['shards'])} shard(s)",
    ]
    if t["without_rows"]:
        lines.append(f"              {t['without_rows']:,} converted result(s) held no packet and gave no row")
    skipped = manifest["skipped"]
    by_type = ", ".join(f"{k} {v:,}" for k, v in skipped["by_type"].items())
    lines.append(f"skipped       {skipped['total']:,} non-ping result(s)" + (f": {by_type}" if by_type else ""))
    rejected = manifest["rejected"]
    by_reason = ", ".join(f"{k} {v:,}" for k, v in rejected["by_reason"].items())
    where = f": {by_reason} (in {shards.REJECTED_DIR}/)" if by_reason else ""
    lines.append(f"rejected      {rejected['total']:,} line(s){where}")
    if seconds:
        lines.append(f"wall time     {seconds:,.1f} s, {t['records'] / seconds:,.0f} results/s")
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code (0 done, 1 the pipeline failed, 2 bad options or inputs)."""
    return run_output_job(argv, parse_args, _run)


def _run(options: Options, beam_args: list[str], started: float, out_dir: OutputDir) -> int:
    previous = append.read_complete(options.output) if options.append else None
    if previous is None:  # a plain run, or the first --append into an output holding no result yet
        units, ctx = plan(options)
        out_dir.prepare(output_rules(options), options.overwrite)
        return _write(options, beam_args, units, ctx, started)
    return _append(options, beam_args, previous, started)


def _append(options: Options, beam_args: list[str], previous: dict, started: float) -> int:
    """``--append`` to the complete output whose manifest is ``previous`` (the writer lock is held)."""
    out = options.output
    shaping = append.check_options(dataclasses.asdict(options), previous, options.given, out)
    options = dataclasses.replace(options, rtt=shaping["rtt"], src=shaping["src"], shard_rows=shaping["shard_rows"])
    leftovers = append.unlisted_entries(out, previous, _is_own)  # refuses foreign files before any work
    selection = append.select_new(discovery.expand_inputs(options.inputs), previous)
    number = len(shards.versions(previous))
    if selection.known:
        lo, hi = min(v for _, v in selection.known), max(v for _, v in selection.known)
        where = f"version {lo}" if lo == hi else f"versions {lo}-{hi}"
        print(f"ingest_atlas: {len(selection.known)} input file(s) converted before ({where}), skipped", file=sys.stderr)
    if leftovers:
        print(f"ingest_atlas: removing {len(leftovers)} file(s) of an unfinished run from {out}", file=sys.stderr)
        append.remove(leftovers)
    if not selection.new:
        print(f"ingest_atlas: nothing to do: {out} is at version {number} and holds every input file")
        return 0
    units, ctx = plan(options, list(selection.new), previous)
    return _write(options, beam_args, units, ctx, started)


def _progress_detail(directory: str) -> Callable[[float], str]:
    """The progress line's second half: the JSON text read so far and its rate."""

    def detail(elapsed: float) -> str:
        mb = sum_markers(directory, "unit-*.json", "bytes") / 1e6
        return f"{mb:,.0f} MB of JSON, {mb / elapsed:,.1f} MB/s"

    return detail


def _write(options: Options, beam_args: list[str], units, ctx: JobContext, started: float) -> int:
    """Run the pipeline into a prepared, locked ``--output``; returns the exit code."""
    total = sum(i["bytes"] for i in ctx.inputs)
    version = f" (version {ctx.version})" if ctx.append else ""
    print(
        f"ingest_atlas: {len(ctx.inputs)} file(s), {total / 1e6:,.1f} MB, {len(units)} work unit(s) "
        f"-> {options.output}{version}",
        file=sys.stderr,
    )
    job = JobRun("ingest", ctx.tmp, separate_log=bool(ctx.scratch))
    progress_dir = os.path.join(ctx.tmp, "progress")
    storage.makedirs(progress_dir)  # workers report progress only when it exists (always, in a store)
    lines = functools.partial(sum_markers, progress_dir, "unit-*.json", "lines")
    try:
        with Progress("ingest_atlas", lines, unit="lines", detail=_progress_detail(progress_dir)):
            joblog.run_pipeline(beam_args, lambda pipeline: build_pipeline(pipeline, units, ctx), job.log)
    except Exception as exc:  # noqa: BLE001 - any pipeline failure ends the job the same way
        state = f"no {shards.SUCCESS_NAME} was written; {options.output} does not hold a complete result"
        if ctx.version > 1:
            state = _undo_append(options.output, ctx)
        return job.failed(RunError(f"ingest_atlas failed: {joblog.pipeline_error(exc)}"), state)
    job.finished()
    try:
        manifest = storage.read_json(os.path.join(options.output, shards.MANIFEST_NAME))
    except (OSError, ValueError) as exc:
        return no_manifest(exc)
    if ctx.append:
        entry = shards.versions(manifest)[-1]
        print(format_summary(entry, time.monotonic() - started))
        t = manifest["totals"]
        print(
            f"version       {entry['version']} of {options.output}: {t['rows']:,} rows in {len(manifest['shards'])} "
            f"shard(s), {len(manifest['inputs'])} input file(s) in all versions"
        )
    else:
        print(format_summary(manifest, time.monotonic() - started))
    return 0


def _undo_append(out: str, ctx: JobContext) -> str:
    """After a failed append: remove the files it wrote (none is listed), so only the previous version's
    remain; returns the line that says what ``out`` now holds."""
    previous = storage.read_json(os.path.join(out, shards.MANIFEST_NAME))
    if previous.get("fingerprint") != ctx.previous_fingerprint:  # the manifest was written: version N is complete
        return f"{out} holds version {ctx.version}, complete"
    try:
        leftovers = [p for p in append.unlisted_entries(out, previous, _is_own) if not p.endswith(shards.TMP_DIR)]
        append.remove(leftovers)
    except (OSError, UsageError) as cleanup:
        print(f"warning: could not remove the unfinished version's files ({cleanup})", file=sys.stderr)
    return f"{out} still holds version {ctx.version - 1}, complete; run the same command again to append"


if __name__ == "__main__":
    sys.exit(run())
