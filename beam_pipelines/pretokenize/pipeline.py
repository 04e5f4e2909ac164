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

Every input, the output and the scratch location may be object-store URLs (``s3://``, ``gs://``; see
docs/object-storage.md). Scratch goes to ``OUT/_tmp``, or under Beam's ``--temp_location`` when given,
and is removed at the end whether the job succeeded or failed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time

import numpy as np
import pyarrow as pa

from beam_pipelines.common import storage
from beam_pipelines.common.cli import StrictArgumentParser, parse_job_args
from beam_pipelines.common.cores import usable_cores
from beam_pipelines.common.errors import RunError, UsageError, report
from beam_pipelines.common.lifecycle import (
    JobRun,
    beam_storage_options,
    no_manifest,
    run_output_job,
    scratch_under,
)
from beam_pipelines.common.output import OutputDir, OutputRules
from beam_pipelines.common.parquet import parquet_file, plan_tasks, resolve_inputs
from beam_pipelines.common.progress import Progress, sum_markers
from beam_pipelines.common.worker_main import start_warm_workers
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from beam_pipelines.dataset.records import check_compression
from beam_pipelines.pretokenize import stages
from beam_pipelines.pretokenize.local import run_stages
from beam_pipelines.pretokenize.splitting import parse_fractions, time_cut_points
from tokenizer import TOKENIZER_NAME, TokenizerMismatch, check_tokenizer, get_scheme, scheme_names

# The bundled sample, beside the package in a checkout: beam_pipelines/pretokenize/pipeline.py -> repo root.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_INPUT = os.path.join(_REPO_ROOT, "data", "sample", "*.parquet")
DEFAULT_BUCKET_ROWS = 1_000_000
# The scale of the DirectRunner's mode choice (one_process_rows): starting the worker processes of the
# multi-process mode costs about 3 s of wall time on 2 cores, what about 1M rows of per-row work take
# (docs/performance.md). The hourly update also uses it to choose --in_process for its appends.
SMALL_INPUT_ROWS = 1_000_000
RUNNER_OPTIONS = ("--runner", "--direct_running_mode", "--direct_num_workers")
_OWN_ENTRIES = {*SPLIT_NAMES, stages.REJECTED_DIR, stages.TMP_DIR, manifest_lib.MANIFEST_NAME, manifest_lib.MANIFEST_NAME + ".tmp"}



# --- planning --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    """Parsed job options (the non-Beam ones)."""

    input: str
    output: str
    seq_len: int
    split: tuple[float, float, float]
    split_by: str
    compression: str
    tmp_compression: str
    overwrite: bool
    bucket_rows: int
    append: bool = False  # add a version to the dataset in --output (shaping options taken from it)
    in_process: bool = False  # run the stages in this process without Beam (local.py)
    given: frozenset = frozenset()  # the shaping options given on the command line (SHAPING_OPTIONS names)
    temp_location: str = ""  # Beam's --temp_location (scratch goes there when given)
    fs_options: dict = dataclasses.field(default_factory=dict)  # Beam's filesystem options (S3, GCS)
    tokenizer: str = TOKENIZER_NAME  # tokenizer scheme (tokenizer.get_scheme); an append takes the dataset's
    tokenizer_given: bool = False  # --tokenizer was on the command line (an append refuses another scheme)


# snappy rather than zstd:3: a third of the CPU of writing 2 KB records (one chunk each) and cheaper to read
# back in training, for files about a third larger (docs/performance.md, "Record compression").
DEFAULT_COMPRESSION = "snappy"
# The options that shape the output, with their defaults: an append takes them from the dataset and
# refuses a given value that differs (a default is applied only when the option is not given).
SHAPING_DEFAULTS = {"seq_len": 1024, "split": "80,10,10", "split_by": "src", "compression": DEFAULT_COMPRESSION, "bucket_rows": DEFAULT_BUCKET_ROWS}


def parse_args(argv):
    parser = StrictArgumentParser(
        prog="python -m beam_pipelines.pretokenize",
        description="Pack Parquet ping measurements into seq_len-token ArrayRecord splits with a manifest. "
        "Apache Beam's own options (e.g. --runner, --direct_num_workers) are passed to Beam; any other "
        "option is refused (exit 2).",
    )
    parser.add_argument("--input", default=DEFAULT_INPUT, help="Parquet file, directory or glob (default: the bundled sample)")
    parser.add_argument("--output", default="out", help="output directory (default ./out)")
    parser.add_argument("--seq_len", type=int, help="tokens per record (default 1024)")
    parser.add_argument(
        "--tokenizer",
        choices=scheme_names(),
        help="tokenizer scheme (docs/tokenizer.md): v1, the seed's (default), or v2, the compact one; an "
        "append keeps the dataset's",
    )
    parser.add_argument("--split", help="train,val,test shares (default 80,10,10)")
    parser.add_argument("--split_by", choices=("src", "time"), help="split by source address (default) or by time")
    parser.add_argument("--compression", help="ArrayRecord compression: snappy (default), zstd[:LEVEL] (smaller files, about 3x the CPU to write), brotli[:LEVEL] or uncompressed")
    parser.add_argument(
        "--tmp_compression",
        choices=("none", "lz4", "zstd"),
        default=None,
        help="compression of the temporary bucket files: none (fastest, about 156 bytes per row of scratch "
        "space), lz4 (about 72) or zstd (default none; lz4 when the scratch is in an object store, where "
        "every byte goes up and comes back over the network)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a different dataset in --output")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add the inputs that the dataset in --output does not hold yet as a new version (its files are "
        "left as they are; shaping options are taken from the dataset)",
    )
    parser.add_argument(
        "--in_process",
        action="store_true",
        help="run the stages in this process without Apache Beam (same output; no runner start-up, one core): "
        "for small inputs such as an hourly append; cannot be combined with a runner option",
    )
    parser.add_argument(
        "--bucket_rows",
        type=int,
        help="about this many rows per grouping bucket; bounds each worker's memory (default 1000000)",
    )
    args, beam_args = parse_job_args(parser, argv)
    given = frozenset(k for k in SHAPING_DEFAULTS if getattr(args, k) is not None)
    for key, default in SHAPING_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    try:
        if args.append and args.overwrite:
            raise UsageError(
                "--append and --overwrite cannot be combined: --append adds a version to the dataset in "
                "--output, --overwrite replaces it"
            )
        if args.in_process and any(a.startswith(RUNNER_OPTIONS) for a in beam_args):
            chosen = " ".join(a for a in beam_args if a.startswith(RUNNER_OPTIONS))
            raise UsageError(f"--in_process runs without Apache Beam; it cannot be combined with {chosen}")
        scheme = get_scheme(args.tokenizer or TOKENIZER_NAME)
        if args.seq_len < scheme.min_seq_len or args.seq_len > 65536:
            raise UsageError(
                f"--seq_len {args.seq_len}: must be between {scheme.min_seq_len} (the longest {scheme.name} "
                "measurement) and 65536"
            )
        if args.bucket_rows < 1:
            raise UsageError("--bucket_rows must be positive")
        temp_location, fs_options = beam_storage_options(beam_args)
        tmp_compression = args.tmp_compression or ("lz4" if storage.is_remote(temp_location or args.output) else "none")
        options = Options(
            input=args.input,
            output=args.output,
            seq_len=args.seq_len,
            split=parse_fractions(args.split),
            split_by=args.split_by,
            compression=check_compression(args.compression),
            tmp_compression=tmp_compression,
            overwrite=args.overwrite,
            bucket_rows=args.bucket_rows,
            append=args.append,
            in_process=args.in_process,
            given=given,
            temp_location=temp_location,
            fs_options=fs_options,
            tokenizer=scheme.name,
            tokenizer_given=args.tokenizer is not None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return options, beam_args


def _second_counts(files):
    """(unique epoch seconds, counts) per row group, reading only the event_time column."""
    for f in files:
        with parquet_file(f.path) as pf:
            yield from _file_second_counts(pf)


def _file_second_counts(pf):
    for rg in range(pf.metadata.num_row_groups):
        col = pf.read_row_group(rg, columns=["event_time"]).column(0).combine_chunks()
        if pa.types.is_null(col.type):
            continue
        col = col.drop_null()
        unit = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[col.type.unit]
        secs = np.floor_divide(col.cast(pa.int64()).to_numpy(), unit)
        yield np.unique(secs, return_counts=True)


def output_rules(options: Options, fingerprint: str) -> OutputRules:
    """What this job may find in ``--output``: the same dataset is left alone, another one is replaced
    only with ``--overwrite``, and a directory holding other files is refused unless ``--overwrite``."""
    out = options.output

    def complete(overwrite: bool) -> str | None:
        try:
            existing = manifest_lib.read_manifest(out)
        except manifest_lib.ManifestError:
            existing = None
        if existing and existing.get("fingerprint") == fingerprint and not overwrite:
            return f"{out} already holds this dataset (fingerprint {fingerprint[:12]}); nothing to do"
        if not overwrite:
            raise UsageError(
                f"{out} holds a different dataset (fingerprint {(existing or {}).get('fingerprint', '?')[:12]}, "
                f"this job's is {fingerprint[:12]}); pass --overwrite to replace it, or --append to add the inputs "
                f"it does not hold as a new version"
            )
        return None

    return OutputRules(
        is_own=_OWN_ENTRIES.__contains__,
        markers=(manifest_lib.MANIFEST_NAME, manifest_lib.MANIFEST_NAME + ".tmp"),
        complete=complete,
        foreign="{out} is not empty and is not a ping-llm dataset (it holds {names}); choose another --output",
    )


def bucket_count(rows: int, bucket_rows: int) -> int:
    """Buckets for ``rows`` input rows: the smallest power of two that holds at most ``bucket_rows`` rows
    per bucket on average.

    A power of two so that the buckets, which are packed one per worker at a time, divide evenly among 2,
    4, 8 or 16 workers (three buckets on two workers leave one idle for a third of the stage); it depends
    only on the input and the options, never on the machine, so the output does not either.
    """
    need = max(1, math.ceil(rows / bucket_rows))
    return 1 << (need - 1).bit_length()


def plan(options: Options, existing: dict | None = None) -> tuple[list, stages.JobContext | None, int]:
    """Validate inputs and fix everything the workers need: tasks, buckets, cut points, fingerprint.

    With ``existing`` (the manifest of the dataset an append adds to) the inputs it already holds (same
    content sha256, in any version) are left out, the time cut points are the dataset's, and the context
    describes the next version. Returns ``(tasks, context, inputs skipped)``; the context is None when an
    append has no new input.
    """
    files = resolve_inputs(options.input)
    skipped = 0
    version, previous = 1, None
    if existing is not None:
        known = {i["sha256"] for i in existing.get("inputs", [])}
        new = [f for f in files if f.sha256 not in known]
        skipped = len(files) - len(new)
        if not new:
            return [], None, skipped
        # A job's tasks index its files: the new inputs are this version's files 0..n-1.
        files = new
        version, previous = existing.get("version", 1) + 1, existing["fingerprint"]
    tasks = plan_tasks(files)
    total_rows = sum(f.rows for f in files)
    num_buckets = bucket_count(total_rows, options.bucket_rows)
    cut_points: tuple[int, ...] = ()
    shaping = {
        "seq_len": options.seq_len,
        "split": list(options.split),
        "split_by": options.split_by,
        "compression": options.compression,
        "bucket_rows": options.bucket_rows,
        "num_buckets": num_buckets,
    }
    if options.split_by == "time":
        if existing is not None:  # the dataset's cuts: a row's split is a function of its time, in every version
            cut_points = tuple(_dataset_options(existing)["time_cut_points"])
        else:
            cut_points = tuple(time_cut_points(_second_counts(files), options.split))
        shaping["time_cut_points"] = list(cut_points)
    inputs = tuple({"path": f.path, "bytes": f.bytes, "rows": f.rows, "sha256": f.sha256} for f in files)
    if previous is None:
        fp = manifest_lib.fingerprint(inputs, shaping, options.tokenizer)
    else:
        fp = manifest_lib.version_fingerprint(previous, inputs, shaping, options.tokenizer)
    ctx = stages.JobContext(
        output=options.output,
        seq_len=options.seq_len,
        fractions=options.split,
        split_by=options.split_by,
        cut_points=cut_points,
        num_buckets=num_buckets,
        compression=options.compression,
        tmp_compression=options.tmp_compression,
        inputs=inputs,
        options=shaping,
        fingerprint=fp,
        scratch=scratch_under(options.temp_location, "pretokenize"),
        fs_options=options.fs_options,
        version=version,
        previous_fingerprint=previous,
        created=manifest_lib.created_now(),
        tokenizer=options.tokenizer,
    )
    return tasks, ctx, skipped


# --- appending a version ---------------------------------------------------------------------------


def _dataset_options(manifest: dict) -> dict:
    """The shaping options of the dataset's latest version (they are the same in every version, save
    ``num_buckets``)."""
    return manifest_lib.dataset_versions(manifest)[-1].get("options") or manifest.get("options") or {}


def dataset_to_append_to(out: str) -> dict:
    """The manifest of the complete dataset in ``out``; :class:`UsageError` when there is none."""
    if not storage.exists(storage.join(out, manifest_lib.MANIFEST_NAME)):
        raise UsageError(f"{out} holds no dataset to append to; run without --append to create it")
    return manifest_lib.read_manifest(out)


def inherit_options(options: Options, manifest: dict) -> Options:
    """``options`` with the dataset's shaping options; a given option that differs is refused, both values
    named (an append must shape its records exactly as the dataset's earlier versions)."""
    out = options.output
    try:
        scheme = check_tokenizer(manifest["tokenizer"])
    except TokenizerMismatch as exc:
        known = " or ".join(str(get_scheme(name).info()) for name in scheme_names())
        raise UsageError(
            f"{out} was written with tokenizer {manifest['tokenizer']}, this code writes {known} ({exc}); an "
            "append must use the dataset's tokenizer (rebuild it instead)"
        ) from exc
    if options.tokenizer_given and options.tokenizer != scheme.name:
        raise UsageError(
            f"--tokenizer {options.tokenizer} differs from the dataset's tokenizer {scheme.name} in {out}; an "
            f"append keeps the dataset's scheme (leave --tokenizer out, or rebuild the dataset without --append)"
        )
    options = dataclasses.replace(options, tokenizer=scheme.name)
    ds = {**_dataset_options(manifest), "seq_len": manifest["seq_len"]}
    values = {
        "seq_len": options.seq_len,
        "split": list(options.split),
        "split_by": options.split_by,
        "compression": options.compression,
        "bucket_rows": options.bucket_rows,
    }
    for key in sorted(options.given):
        if key in ds and values[key] != ds[key]:
            raise UsageError(
                f"--{key} {values[key]} differs from the dataset's {key} {ds[key]} in {out}; an append keeps "
                f"the dataset's shaping options (leave --{key} out, or rebuild the dataset without --append)"
            )
    taken = {k: ds[k] for k in values if k in ds}
    if "split" in taken:
        taken["split"] = tuple(taken["split"])
    return dataclasses.replace(options, **taken)


def remove_leftovers(out: str, manifest: dict) -> list[str]:
    """Remove what an interrupted run left in ``out`` beside the complete dataset: the scratch folder, a
    half-written manifest, and files in the dataset's folders that the manifest does not list (an append
    killed after it gave its new files their final names). Listed files are never touched. Returns the
    removed files' paths relative to ``out``."""
    listed = {f["path"] for v in manifest_lib.dataset_versions(manifest) for s in v.get("splits", {}).values() for f in s["files"]}
    listed |= {p for v in manifest_lib.dataset_versions(manifest) for p in (v.get("rejected") or {}).get("files", [])}
    listed |= {f["path"] for s in manifest["splits"].values() for f in s["files"]}
    removed = []
    for name in storage.listdir(out):
        path = storage.join(out, name)
        if name in (stages.TMP_DIR, manifest_lib.MANIFEST_NAME + ".tmp"):
            storage.rmtree(path)
            removed.append(name)
        elif name in (*SPLIT_NAMES, stages.REJECTED_DIR):
            base = path.rstrip("/") + "/"
            for file in storage.list_files(path):
                rel = f"{name}/{file[len(base):]}"
                if rel not in listed:
                    storage.remove(file)
                    removed.append(rel)
    return removed


# --- progress and summary --------------------------------------------------------------------------


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
                # The LocalRunner's worker processes, when it will use them, start now: they import Beam
                # while this process does (common/worker_main.py).
                warm = start_warm_workers(args, job.log, ["beam_pipelines.pretokenize.transforms"])
                try:
                    # Beam imported here, not at the top: the 1.5-2.6 s of start-up that --in_process saves.
                    from beam_pipelines.common import joblog
                    from beam_pipelines.pretokenize.transforms import build_pipeline

                    joblog.run_pipeline(args, lambda pipeline: build_pipeline(pipeline, tasks, ctx), job.log, warm)
                finally:
                    if warm is not None:
                        warm.close()
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
