"""Ingest RIPE Atlas ping results (daily dumps or API downloads) into Parquet shards in the seed's schema.

    python -m beam_pipelines.ingest_atlas --input GLOB --output DIR [--rtt min|avg|each] [--src from|src_addr]
        [--shard_rows 1000000] [--overwrite] [any Beam pipeline option, e.g. --runner=DaskRunner]

Inputs: ``.bz2``, ``.gz``, ``.xz`` or plain files (told apart by their first bytes), each JSON lines (the
daily dumps ``ping-YYYY-MM-DDTHH00.bz2``) or a JSON array (API downloads), read as streams. Output:
``DIR/part-NNNNN-of-NNNNN.parquet`` (zstd, :data:`beam_pipelines.ingest_atlas.convert.ROW_SCHEMA`, rows in input file
then line order), ``DIR/rejected/rejected-NNNNN-of-NNNNN.parquet`` (file, line_number, reason, raw_line),
``DIR/manifest.json`` (counts, shards with sha256) and, last, ``DIR/_SUCCESS``.

Stages (composite PTransforms over plain functions in ``streams`` and ``shards``): ReadAtlasResults (one work unit per
compressed file or per byte range of a plain file: stream, convert, write Arrow fragments) ->
PlanShards (a barrier: global row positions -> fixed-size shards) -> WriteParquetShards -> WriteManifest.

Inputs and ``--output`` may be object-store URLs (``s3://``, ``gs://``; docs/object-storage.md): shards are
written on the worker's disk, uploaded and checked (size, sha256); fragments and progress markers go to
``--temp_location`` when given, else ``DIR/_tmp_ingest``, removed at the end; ``_SUCCESS`` comes last.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.ptransform import ptransform_fn

from beam_pipelines.common import joblog, storage
from beam_pipelines.common.errors import InputError, RunError, UsageError, report
from beam_pipelines.common.options import beam_options
from beam_pipelines.common.output import OutputDir, OutputRules
from beam_pipelines.common.progress import Progress, sum_markers
from beam_pipelines.common.transforms import GatherAll, create_spread
from beam_pipelines.ingest_atlas import shards, streams
from beam_pipelines.ingest_atlas.convert import RTT_MODES, SRC_MODES

_OWN_FILES = {
    shards.MANIFEST_NAME,
    shards.MANIFEST_NAME + ".tmp",
    shards.SUCCESS_NAME,
    shards.REJECTED_DIR,
    shards.TMP_DIR,
}



@dataclasses.dataclass(frozen=True)
class JobContext:
    """Everything a worker needs; pickled into the DoFns."""

    output: str
    rtt: str
    src: str
    shard_rows: int
    row_group_rows: int
    batch_rows: int
    inputs: tuple  # dicts: index, path, bytes, compression
    options: dict  # the options that shape the output (recorded in the manifest)
    scratch: str = ""  # the scratch folder (a URL too); "" means DIR/_tmp_ingest
    fs_options: dict = dataclasses.field(default_factory=dict)  # Beam's filesystem options, for the workers

    @property
    def tmp(self) -> str:
        return self.scratch or os.path.join(self.output, shards.TMP_DIR)

    def configure_storage(self) -> None:
        if self.fs_options:
            storage.configure(self.fs_options)


# --- Beam adapters -----------------------------------------------------------------------------------


class _IngestUnitFn(beam.DoFn):
    def __init__(self, ctx: JobContext):
        self._ctx = ctx
        self._records = Metrics.counter("ingest_atlas", "records")
        self._rows = Metrics.counter("ingest_atlas", "rows")

    def setup(self):
        self._ctx.configure_storage()

    def process(self, unit):
        ctx = self._ctx
        summary = streams.ingest_unit(unit, ctx.tmp, ctx.rtt, ctx.src, ctx.batch_rows)
        self._records.inc(summary.records)
        self._rows.inc(summary.rows)
        yield summary


class _WriteShardFn(beam.DoFn):
    def __init__(self, ctx: JobContext):
        self._ctx = ctx

    def setup(self):
        self._ctx.configure_storage()

    def process(self, element):
        if isinstance(element, streams.UnitSummary):  # unit summaries ride along to the manifest
            yield element
        else:
            yield shards.write_shard(element, self._ctx.output, self._ctx.row_group_rows)


def _plan(units: list[streams.UnitSummary], ctx: JobContext) -> list:
    """The unit summaries, then the shard specs planned from them."""
    return [*units, *shards.plan_shards(units, ctx.shard_rows)]


def _finalize(summaries: list, ctx: JobContext) -> dict:
    """Manifest, then ``_SUCCESS``, then the temporary fragments go."""
    ctx.configure_storage()
    units = [s for s in summaries if isinstance(s, streams.UnitSummary)]
    written = [s for s in summaries if isinstance(s, shards.ShardSummary)]
    manifest = shards.build_manifest(units, written, ctx.inputs, ctx.options)
    manifest["fingerprint"] = _fingerprint(ctx)
    storage.write_json(os.path.join(ctx.output, shards.MANIFEST_NAME), manifest)
    success = {"fingerprint": manifest["fingerprint"]}
    storage.write_json(os.path.join(ctx.output, shards.SUCCESS_NAME), success)  # last
    storage.rmtree(ctx.tmp)
    return manifest


@ptransform_fn
def ReadAtlasResults(pbegin, units, ctx: JobContext):
    """PBegin -> one :class:`~streams.UnitSummary` per work unit; its rows and rejected lines are in
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


@ptransform_fn
def WriteManifest(summaries, ctx: JobContext):
    """Every summary -> the manifest and ``_SUCCESS``, written last.

    The pipeline is one chain ending here, so a runner that computes only the last transform's graph
    (the DaskRunner) still runs every stage.
    """
    return summaries | "GatherAllSummaries" >> GatherAll() | "Finalize" >> beam.Map(_finalize, ctx)


def build_pipeline(pipeline: beam.Pipeline, units, ctx: JobContext):
    """Attach the ingest stages to ``pipeline``; returns the manifest PCollection."""
    return (
        pipeline
        | "ReadAtlasResults" >> ReadAtlasResults(units, ctx)
        | "PlanShards" >> PlanShards(ctx)
        | "WriteParquetShards" >> WriteParquetShards(ctx)
        | "WriteManifest" >> WriteManifest(ctx)
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
    temp_location: str = ""  # Beam's --temp_location (scratch goes there when given)
    fs_options: dict = dataclasses.field(default_factory=dict)  # Beam's filesystem options (S3, GCS)


def parse_args(argv) -> tuple[Options, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.ingest_atlas",
        description="Convert RIPE Atlas ping results (JSON lines or JSON arrays; bz2, gz, xz or plain) into "
        "Parquet shards in the seed's schema. Unknown options are passed to Apache Beam (e.g. --runner).",
    )
    parser.add_argument("--input", action="append", required=True, help="file, directory or glob; may be repeated")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument(
        "--rtt", choices=RTT_MODES, default="min", help="min (default) or avg RTT per result, or one row per packet"
    )
    parser.add_argument(
        "--src", choices=SRC_MODES, default="from", help="source address: from (public, default) or src_addr (local)"
    )
    parser.add_argument(
        "--shard_rows", type=int, default=shards.DEFAULT_SHARD_ROWS, help="rows per Parquet shard (default 1000000)"
    )
    parser.add_argument(
        "--split_bytes",
        type=int,
        default=streams.DEFAULT_SPLIT_BYTES,
        help="read plain JSON-lines files in ranges of this many bytes, in parallel (default 64 MiB); "
        "no effect on the output",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a previous result in --output")
    args, beam_args = parser.parse_known_args(argv)
    if args.shard_rows < 1 or args.split_bytes < 1:
        raise UsageError("--shard_rows and --split_bytes must be positive")
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    pipeline_options = beam_options(beam_args)
    options = Options(
        inputs=tuple(args.input),
        output=args.output,
        rtt=args.rtt,
        src=args.src,
        shard_rows=args.shard_rows,
        split_bytes=args.split_bytes,
        overwrite=args.overwrite,
        temp_location=pipeline_options.view_as(GoogleCloudOptions).temp_location or "",
        fs_options=storage.filesystem_options(pipeline_options),
    )
    return options, beam_args


def _fingerprint(ctx: JobContext) -> str:
    payload = {"inputs": [{"path": i["path"], "bytes": i["bytes"]} for i in ctx.inputs], "options": ctx.options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan(options: Options):
    """Find and inspect the inputs; returns the work units and the job context. Raises InputError."""
    files = streams.inspect_inputs(streams.expand_inputs(options.inputs))
    units = streams.plan_units(files, options.split_bytes)
    inputs = tuple({"index": f.index, "path": f.path, "bytes": f.bytes, "compression": f.compression} for f in files)
    ctx = JobContext(
        output=options.output,
        rtt=options.rtt,
        src=options.src,
        shard_rows=options.shard_rows,
        row_group_rows=shards.ROW_GROUP_ROWS,
        batch_rows=streams.BATCH_ROWS,
        inputs=inputs,
        options={
            "rtt": options.rtt,
            "src": options.src,
            "shard_rows": options.shard_rows,
            "row_group_rows": shards.ROW_GROUP_ROWS,
        },
        scratch=storage.join(options.temp_location.rstrip("/"), f"ingest-{uuid.uuid4().hex[:12]}") if options.temp_location else "",
        fs_options=options.fs_options,
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
    started = time.monotonic()
    try:
        options, beam_args = parse_args(argv)
    except SystemExit as exc:  # argparse's --help or usage error: an exit code, not an exit
        return exc.code if isinstance(exc.code, int) else 2
    except UsageError as exc:
        return report(exc)
    try:
        storage.configure(options.fs_options)
        if options.temp_location:
            storage.check_location(options.temp_location)
        with OutputDir(options.output) as out_dir:  # a second writer is refused before any input is read
            units, ctx = plan(options)
            out_dir.prepare(output_rules(options), options.overwrite)
            return _write(options, beam_args, units, ctx, started)
    except (UsageError, InputError) as exc:
        return report(exc)


def _progress_detail(directory: str) -> Callable[[float], str]:
    """The progress line's second half: the JSON text read so far and its rate."""

    def detail(elapsed: float) -> str:
        mb = sum_markers(directory, "unit-*.json", "bytes") / 1e6
        return f"{mb:,.0f} MB of JSON, {mb / elapsed:,.1f} MB/s"

    return detail


def _write(options: Options, beam_args: list[str], units, ctx: JobContext, started: float) -> int:
    """Run the pipeline into a prepared, locked ``--output``; returns the exit code."""
    total = sum(i["bytes"] for i in ctx.inputs)
    print(
        f"ingest_atlas: {len(ctx.inputs)} file(s), {total / 1e6:,.1f} MB, {len(units)} work unit(s) "
        f"-> {options.output}",
        file=sys.stderr,
    )
    progress_dir = os.path.join(ctx.tmp, "progress")
    storage.makedirs(progress_dir)  # workers report progress only when it exists (always, in a store)
    # Beam's log is written by this process: beside local scratch as before, else in a local folder.
    separate = bool(ctx.scratch) or storage.is_remote(ctx.tmp)
    log_dir = tempfile.mkdtemp(prefix="ping-llm-ingest-log-") if separate else ctx.tmp
    log = os.path.join(log_dir, joblog.LOG_NAME)
    lines = functools.partial(sum_markers, progress_dir, "unit-*.json", "lines")
    try:
        with Progress("ingest_atlas", lines, unit="lines", detail=_progress_detail(progress_dir)):
            joblog.run_pipeline(beam_args, lambda pipeline: build_pipeline(pipeline, units, ctx), log)
    except Exception as exc:  # noqa: BLE001 - any pipeline failure ends the job the same way
        if separate:
            try:
                storage.rmtree(ctx.tmp)
            except (OSError, InputError) as cleanup:
                print(f"warning: could not remove the scratch files under {ctx.tmp} ({cleanup})", file=sys.stderr)
        else:
            joblog.keep_only_log(ctx.tmp, log)
        return report(
            RunError(f"ingest_atlas failed: {joblog.pipeline_error(exc)}"),
            f"no {shards.SUCCESS_NAME} was written; {options.output} does not hold a complete result",
            *joblog.log_notes(log),
        )
    if separate:
        shutil.rmtree(log_dir, ignore_errors=True)
    try:
        manifest = storage.read_json(os.path.join(options.output, shards.MANIFEST_NAME))
    except (OSError, ValueError) as exc:
        return report(RunError(f"the pipeline finished without writing a manifest ({exc})"))
    print(format_summary(manifest, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(run())
