"""Planning a pretokenize run, before any worker starts: the inputs resolved and cut into read tasks, the
number of buckets, the time split's cut points, the fingerprint (:func:`plan`; everything the workers need
goes into the :class:`~beam_pipelines.pretokenize.stages.JobContext`), and what the job may find in
``--output`` (:func:`output_rules`).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from beam_pipelines.common.cli import fields_from
from beam_pipelines.common.errors import UsageError
from beam_pipelines.common.lifecycle import scratch_under
from beam_pipelines.common.output import OutputRules
from beam_pipelines.common.parquet import parquet_file, plan_tasks, resolve_inputs
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from beam_pipelines.pretokenize import stages
from beam_pipelines.pretokenize.options import Options
from beam_pipelines.pretokenize.splitting import time_cut_points

_OWN_ENTRIES = {*SPLIT_NAMES, stages.REJECTED_DIR, stages.TMP_DIR, manifest_lib.MANIFEST_NAME, manifest_lib.MANIFEST_NAME + ".tmp"}


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
            cut_points = tuple(dataset_options(existing)["time_cut_points"])
        else:
            cut_points = tuple(time_cut_points(_second_counts(files), options.split))
        shaping["time_cut_points"] = list(cut_points)
    inputs = tuple({"path": f.path, "bytes": f.bytes, "rows": f.rows, "sha256": f.sha256} for f in files)
    if previous is None:
        fp = manifest_lib.fingerprint(inputs, shaping, options.tokenizer)
    else:
        fp = manifest_lib.version_fingerprint(previous, inputs, shaping, options.tokenizer)
    ctx = fields_from(  # output, fs_options, seq_len, split_by, compression, tmp_compression, tokenizer: the options'
        stages.JobContext,
        options,
        fractions=options.split,
        cut_points=cut_points,
        num_buckets=num_buckets,
        inputs=inputs,
        options=shaping,
        fingerprint=fp,
        scratch=scratch_under(options.temp_location, "pretokenize"),
        version=version,
        previous_fingerprint=previous,
        created=manifest_lib.created_now(),
    )
    return tasks, ctx, skipped


def dataset_options(manifest: dict) -> dict:
    """The shaping options of the dataset's latest version (they are the same in every version, save
    ``num_buckets``)."""
    return manifest_lib.dataset_versions(manifest)[-1].get("options") or manifest.get("options") or {}
