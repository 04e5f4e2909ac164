"""The hourly update: new RIPE Atlas dump files in a folder -> Parquet shards -> a new dataset version.

    python -m beam_pipelines.update --incoming DIR --parquet PQ --dataset DS
        [--rtt ... --src ... --shard_rows ...] [--seq_len ... --split ... --split_by ... --compression ...
        --bucket_rows ... --tmp_compression ...] [Beam options, given to both jobs]

1. ``ingest_atlas --append``: every file directly in ``DIR`` (names starting with ``.`` or ending in ``.tmp``,
   ``.part`` or ``.partial`` are downloads in progress and are left alone) that ``PQ`` has not converted
   (path, size, sha256) becomes a new version of ``PQ``; the first run creates ``PQ``.
2. ``pretokenize --append --input PQ``: the shards of ``PQ`` that ``DS`` does not hold yet (by sha256, read
   from the two manifests, so an update with nothing new hashes nothing) become a new version of ``DS``;
   the first run creates ``DS``. Fewer than ``pretokenize.SMALL_INPUT_ROWS`` new rows, and no runner option
   given: with ``--in_process`` (the stages in this process, without Beam's start-up; same bytes).

Each step is one of the jobs, with its own guarantees: a crash leaves its output at its previous complete
version, and the rerun removes what the crash left and completes. So the update is idempotent (a rerun with
no new file says "nothing to do" and changes nothing) and safe to rerun after a crash at any point: step 1
then finds nothing new or completes its version, and step 2 picks up every shard ``DS`` lacks, however many
versions of ``PQ`` that spans. One update at a time: it holds ``PQ.update.lock`` (a file beside ``PQ``, the
writer lock of :mod:`beam_pipelines.common.output`) for the whole run, so a second one is refused at once
(exit 2) and never sees the other's half-written shards. Exit codes as the jobs': 0 done or up to date,
1 a step failed, 2 bad options or input (the first failing step's code). docs/update.md is the runbook.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from beam_pipelines.common import object_store, storage
from beam_pipelines.common.cli import StrictArgumentParser, parse_job_args
from beam_pipelines.common.errors import InputError, RunError, UsageError
from beam_pipelines.common.lifecycle import beam_storage_options, run_job
from beam_pipelines.common.output import WriterLock
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.pretokenize import pipeline as pretokenize
from beam_pipelines.pretokenize.options import RUNNER_OPTIONS

IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial")  # downloads not finished yet: not dump files
INGEST_OPTIONS = ("rtt", "src", "shard_rows")
PRETOKENIZE_OPTIONS = ("seq_len", "split", "split_by", "compression", "bucket_rows", "tmp_compression")
LOCK_SUFFIX = ".update.lock"


def parse_args(argv) -> tuple[argparse.Namespace, list[str]]:
    parser = StrictArgumentParser(
        prog="python -m beam_pipelines.update",
        description="Add the new RIPE Atlas dump files of a folder to a Parquet folder (ingest_atlas --append) "
        "and to a dataset (pretokenize --append), creating both on the first run. Apache Beam's own options "
        "are given to both jobs; any other option is refused (exit 2).",
    )
    parser.add_argument("--incoming", required=True, help="folder of dump files (bz2, gz, xz or plain JSON)")
    parser.add_argument("--parquet", required=True, help="the ingest_atlas output (Parquet shards) to append to")
    parser.add_argument("--dataset", required=True, help="the pretokenized dataset to append to")
    for name in INGEST_OPTIONS:
        parser.add_argument(f"--{name}", help=f"ingest_atlas --{name} (default: the output's, or the job's)")
    for name in PRETOKENIZE_OPTIONS:
        parser.add_argument(f"--{name}", help=f"pretokenize --{name} (default: the dataset's, or the job's)")
    return parse_job_args(parser, argv)


def incoming_files(folder: str) -> list[str]:
    """The dump files directly in ``folder``, sorted (a download in progress is not one: see the module)."""
    if storage.is_remote(folder):
        storage.check_location(folder)
        base = folder.rstrip("/") + "/"
        paths = [p for p in storage.list_files(folder) if "/" not in p[len(base) :]]
    else:
        if not os.path.isdir(folder):
            raise InputError(f"--incoming {folder}: no such folder")
        paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, n))]
    names = ((p, p.rstrip("/").rsplit("/", 1)[-1]) for p in paths)
    return sorted(p for p, n in names if not n.startswith(".") and not n.endswith(IN_PROGRESS_SUFFIXES))


def update_lock(parquet: str) -> WriterLock:
    """The update's own writer lock, ``PQ.update.lock`` beside ``PQ`` (not inside it: ``PQ`` holds only
    what ingest_atlas writes, and ingest_atlas takes ``PQ``'s own lock for each of its runs)."""
    lock = WriterLock(parquet)
    lock.path = parquet.rstrip("/") + LOCK_SUFFIX
    if not storage.is_remote(parquet):
        os.makedirs(os.path.dirname(os.path.abspath(parquet)), exist_ok=True)
    return lock


def _say(line: str) -> None:
    print(f"update: {line}", file=sys.stderr, flush=True)


def _given(args: argparse.Namespace, names) -> list[str]:
    return [x for name in names if getattr(args, name) is not None for x in (f"--{name}", str(getattr(args, name)))]


def run(argv: list[str] | None = None) -> int:
    """Run the update; returns the exit code (0 done or up to date, 1 a step failed, 2 bad options or input)."""
    return run_job(argv, parse_args, _run, errors=(UsageError, InputError, RunError))


def _run(args: argparse.Namespace, beam_args: list[str], started: float) -> int:
    object_store.configure(beam_storage_options(beam_args)[1])
    with update_lock(args.parquet):
        return _update(args, beam_args, started)


def _update(args: argparse.Namespace, beam_args: list[str], started: float) -> int:
    # ingest_atlas imported here, not at the top: it imports Beam (1.5-2.6 s of start-up), which an update
    # whose pretokenize step runs --in_process, or that has nothing to do, never needs.
    from beam_pipelines.ingest_atlas import append as ingest_append
    from beam_pipelines.ingest_atlas import pipeline as ingest_atlas

    files = incoming_files(args.incoming)
    if files:
        _say(f"[1/2] ingest_atlas --append: {len(files)} dump file(s) in {args.incoming} -> {args.parquet}")
        argv = [x for f in files for x in ("--input", f)]
        rc = ingest_atlas.run([*argv, "--output", args.parquet, "--append", *_given(args, INGEST_OPTIONS), *beam_args])
        if rc:
            _say(f"ingest_atlas failed (exit {rc}); {args.parquet} keeps its last complete version; run again")
            return rc
    else:
        _say(f"[1/2] ingest_atlas: no dump file in {args.incoming}")
    ingested = ingest_append.read_complete(args.parquet) if storage.isdir(args.parquet) else None
    if ingested is None:
        print(f"update: nothing to do: {args.incoming} holds no dump file and {args.parquet} no ingest result yet")
        return 0
    pq_version = ingested.get("version", 1)
    _check_no_unlisted_shards(args.parquet, ingested)

    dataset = _dataset_manifest(args.dataset)
    held = set() if dataset is None else _input_hashes(dataset)
    new = [s for s in ingested["shards"] if s["sha256"] not in held]
    if not new:
        version = dataset.get("version", 1)
        print(f"update: nothing to do: {args.dataset} (version {version}) holds every shard of {args.parquet} (version {pq_version})")
        return 0
    if not sum(s["rows"] for s in new):
        print(f"update: nothing to do: the {len(new)} shard(s) of {args.parquet} that {args.dataset} lacks hold no row")
        return 0
    how = "--append" if dataset is not None else "(creates it)"
    _say(f"[2/2] pretokenize {how}: {len(new)} new shard(s), {sum(s['rows'] for s in new):,} rows -> {args.dataset}")
    argv = ["--input", args.parquet, "--output", args.dataset, *(["--append"] if dataset is not None else [])]
    rows = sum(s["rows"] for s in new)
    if rows < pretokenize.SMALL_INPUT_ROWS and not any(a.startswith(RUNNER_OPTIONS) for a in beam_args):
        # An hour of new data: Beam's start-up would be most of the job's time (docs/performance.md).
        argv.append("--in_process")
    rc = pretokenize.run([*argv, *_given(args, PRETOKENIZE_OPTIONS), *beam_args])
    if rc:
        _say(f"pretokenize failed (exit {rc}); {args.dataset} keeps its last complete version; run again")
        return rc
    after = _dataset_manifest(args.dataset) or {}
    print(
        f"update: done in {time.monotonic() - started:,.1f} s: {args.parquet} version {pq_version}, "
        f"{args.dataset} version {after.get('version', 1)}"
    )
    return 0


def _check_no_unlisted_shards(parquet: str, manifest: dict) -> None:
    """pretokenize reads ``PQ/*.parquet``: every such file must be one the manifest lists (ingest_atlas removes
    a crashed run's shards before it appends; anything else there is somebody else's)."""
    listed = {s["path"] for s in manifest["shards"]}
    found = {p.rstrip("/").rsplit("/", 1)[-1] for p in storage.glob(storage.join(parquet, "*.parquet"))}
    extra = sorted(found - listed)
    if extra:
        raise RunError(
            f"{parquet} holds Parquet files its manifest does not list ({extra[:3]}); pretokenize would read them: "
            "remove them (or rerun the update, whose ingest step removes a crashed run's shards)"
        )


def _dataset_manifest(dataset: str) -> dict | None:
    """The complete dataset's manifest in ``dataset``, or None when there is none yet."""
    if not storage.exists(storage.join(dataset, manifest_lib.MANIFEST_NAME)):
        return None
    try:
        return manifest_lib.read_manifest(dataset)
    except manifest_lib.ManifestError as exc:
        raise InputError(str(exc)) from exc


def _input_hashes(manifest: dict) -> set[str]:
    """The sha256 of every input of every version of a dataset."""
    found = {i.get("sha256") for i in manifest.get("inputs", [])}
    for v in manifest_lib.dataset_versions(manifest):
        found.update(i.get("sha256") for i in v.get("inputs", []))
    return found - {None}
