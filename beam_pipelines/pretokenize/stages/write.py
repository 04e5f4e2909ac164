"""Stages 6 and 7 (WriteArrayRecords, WriteManifest): one bucket's records of one split written to a
verified temporary ArrayRecord file (:func:`write_bucket_records`), then, once every file is written, the
rejected rows gathered, the records renamed to their final names and the manifest written last
(:func:`finalize`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.common import storage
from beam_pipelines.common.parquet import parquet_file
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from beam_pipelines.dataset.records import write_records
from beam_pipelines.pretokenize.packing import PackResult
from beam_pipelines.pretokenize.stages.context import (
    NOTHING_ENCODED,
    REJECTED_DIR,
    EncodeSummary,
    JobContext,
    RecordsSummary,
)

REJECTED_FILE_ROWS = 1 << 20  # rejected rows per file of OUT/rejected/ at most


# --- stage 6: write one bucket's records of one split ---------------------------------------------


def write_bucket_records(bucket: int, split: int, result: PackResult, ctx: JobContext) -> RecordsSummary:
    """Write packed records to a temporary ArrayRecord file (verified), returning its summary.

    With object-store scratch, ArrayRecord's writer (local files only) writes on this worker's temporary
    disk; the file is uploaded and what the store then holds is checked: size and sha256 (read back).
    """
    directory = os.path.join(ctx.tmp, "records", SPLIT_NAMES[split])
    path = os.path.join(directory, f"{bucket:05d}.array_record")
    if storage.is_remote(path):
        with storage.local_tmpdir() as local_dir:
            local = os.path.join(local_dir, os.path.basename(path))
            info = write_records(local, result.records, ctx.compression)  # records, bytes, sha256
            size, digest = storage.upload(local, path, verify_sha256=True)
            if (size, digest) != (info["bytes"], info["sha256"]):  # the local file changed under us: never
                raise OSError(f"{path}: uploaded {size} bytes ({digest}), wrote {info['bytes']} ({info['sha256']})")
    else:
        os.makedirs(directory, exist_ok=True)
        info = write_records(path, result.records, ctx.compression)  # records, bytes, sha256
    return RecordsSummary(
        bucket=bucket,
        split=SPLIT_NAMES[split],
        tmp_path=path,
        **info,
        measurements=result.measurements,
        tokens=result.tokens,
        pad_tokens=result.pad_tokens,
        sources=result.sources,
        continuous=result.continuous,
    )


# --- stage 7: finalize (rejected rows gathered, records renamed into place, manifest last) --------


def plan_rejected_files(
    parts: Sequence[tuple[str, int, pa.Schema]], rows_per_file: int = REJECTED_FILE_ROWS
) -> list[list[tuple[str, int, int]]]:
    """Cut the rejected rows of ``parts`` (scratch file, rows, schema; in task order) into output files.

    Each output file is a list of ``(scratch file, first row, rows)`` pieces. A file holds at most
    ``rows_per_file`` rows, and one schema (inputs of different schemas never share a file), so there are
    at most ``ceil(total / rows_per_file)`` files plus one per change of schema, however many row groups.
    """
    files: list[list[tuple[str, int, int]]] = []
    schema, room = None, 0
    for path, rows, part_schema in parts:
        if schema is None or not part_schema.equals(schema):
            schema, room = part_schema, 0
        start = 0
        while start < rows:
            if room == 0:
                files.append([])
                room = rows_per_file
            take = min(room, rows - start)
            files[-1].append((path, start, take))
            start, room = start + take, room - take
    return files


def file_stem(prefix: str, version: int, i: int, n: int) -> str:
    """The name of a dataset file without its suffix: ``{prefix}-{i:05d}-of-{n:05d}`` for version 1 (the
    names datasets had before versions existed) and ``{prefix}-v{version:05d}-{i:05d}-of-{n:05d}`` for a
    later version, so an append's files never collide with an earlier version's."""
    if version == 1:
        return f"{prefix}-{i:05d}-of-{n:05d}"
    return f"{prefix}-v{version:05d}-{i:05d}-of-{n:05d}"


def gather_rejected(
    encodes: Sequence[EncodeSummary], output: str, rows_per_file: int = REJECTED_FILE_ROWS, version: int = 1
) -> list[str]:
    """Concatenate the tasks' scratch files of rejected rows, in task order, into
    ``output/rejected/rejected-NNNNN-of-NNNNN.parquet`` (``rejected-vVVVVV-...`` for a version > 1, see
    :func:`file_stem`); returns the paths relative to ``output``."""
    scratch = [s.rejected_file for s in sorted(encodes, key=lambda s: s.task) if s.rejected_file]
    parts = []
    for path in scratch:
        with parquet_file(path) as pf:
            meta = pf.metadata
        parts.append((path, meta.num_rows, meta.schema.to_arrow_schema()))
    files = plan_rejected_files(parts, rows_per_file)
    if files:
        storage.makedirs(os.path.join(output, REJECTED_DIR))
    paths = []
    for i, pieces in enumerate(files):
        rel = f"{REJECTED_DIR}/{file_stem('rejected', version, i, len(files))}.parquet"
        table = pa.concat_tables(_read_parquet(path).slice(start, rows) for path, start, rows in pieces)
        with storage.local_copy_for_write(os.path.join(output, rel)) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        paths.append(rel)
    return paths


def _read_parquet(path: str) -> pa.Table:
    with parquet_file(path) as pf:
        return pf.read()


def _split_entry(parts: Sequence[RecordsSummary], name: str, output: str, version: int = 1) -> dict:
    """Rename one split's temporary (already verified) files into place; returns the split's manifest
    entry. In an object store a rename is a server-side copy and a delete; the copy's size is checked."""
    storage.makedirs(os.path.join(output, name))
    files = []
    for i, part in enumerate(parts):
        rel = f"{name}/{file_stem(name, version, i, len(parts))}.array_record"
        storage.move(part.tmp_path, os.path.join(output, rel))
        files.append({"path": rel, "records": part.records, "bytes": part.bytes, "sha256": part.sha256})
    measurements = sum(p.measurements for p in parts)
    return {
        "records": sum(p.records for p in parts),
        "measurements": measurements,
        "tokens": sum(p.tokens for p in parts),
        "pad_tokens": sum(p.pad_tokens for p in parts),
        "sources": sum(p.sources for p in parts),
        "context_continuity": (sum(p.continuous for p in parts) / measurements) if measurements else None,
        "files": files,
    }


def finalize(summaries: Sequence[EncodeSummary | RecordsSummary], ctx: JobContext) -> dict | None:
    """Gather the rejected rows, rename temporary files to their final names, write the manifest last,
    remove ``_tmp``.

    When no row could be encoded there is no dataset: the rejected rows are gathered into
    ``OUT/rejected/`` (so the reasons can be read), no split folder and no manifest are written, and
    ``OUT/_tmp/`` + :data:`NOTHING_ENCODED` records the counts for the launcher, which reports the
    failure (exit 1). Returns the manifest, or None in that case.
    """
    ctx.configure_storage()
    encodes = sorted((s for s in summaries if isinstance(s, EncodeSummary)), key=lambda s: s.task)
    if sum(s.accepted for s in encodes) == 0:
        rejected_paths = gather_rejected(encodes, ctx.output, version=ctx.version)
        by_reason: Counter = Counter()
        for s in encodes:
            by_reason.update(s.rejected)
        storage.write_json(
            os.path.join(ctx.tmp, NOTHING_ENCODED),
            {"read": sum(s.rows for s in encodes), "by_reason": dict(sorted(by_reason.items())), "files": rejected_paths},
        )
        return None
    records = sorted((s for s in summaries if isinstance(s, RecordsSummary)), key=lambda s: (s.split, s.bucket))
    previous = _previous_versions(ctx)  # before anything is renamed: an append onto a changed dataset stops here
    splits = {
        name: _split_entry([r for r in records if r.split == name and r.records > 0], name, ctx.output, ctx.version)
        for name in SPLIT_NAMES
    }
    rejected_paths = gather_rejected(encodes, ctx.output, version=ctx.version)
    by_reason: Counter = Counter()
    for s in encodes:
        by_reason.update(s.rejected)

    # This version's entry; the top-level keys are the totals over all versions (manifest.combine_versions).
    manifest = {
        "version": ctx.version,
        "created": ctx.created,
        "splits": splits,
        "rejected": {"total": sum(by_reason.values()), "by_reason": dict(sorted(by_reason.items())), "files": rejected_paths},
        "rows": {
            "read": sum(s.rows for s in encodes),
            "accepted": sum(s.accepted for s in encodes),
            "rejected": sum(by_reason.values()),
        },
        "inputs": [dict(i) for i in ctx.inputs],
        "options": ctx.options,
        "fingerprint": ctx.fingerprint,
    }
    if manifest["rows"]["read"] != sum(i["rows"] for i in ctx.inputs):
        raise RuntimeError(
            f"read {manifest['rows']['read']} rows but the inputs hold {sum(i['rows'] for i in ctx.inputs)}"
        )
    if manifest["rows"]["accepted"] != sum(s["measurements"] for s in splits.values()):
        raise RuntimeError("accepted rows and packed measurements disagree")
    written = 0
    for p in rejected_paths:
        with parquet_file(os.path.join(ctx.output, p)) as pf:
            written += pf.metadata.num_rows
    if written != manifest["rows"]["rejected"]:
        raise RuntimeError(f"the rejected files hold {written} rows but {manifest['rows']['rejected']} were rejected")
    base = previous or {
        "format_version": manifest_lib.FORMAT_VERSION,
        "tokenizer": manifest_lib.tokenizer_info(ctx.tokenizer),
        "seq_len": ctx.seq_len,
    }
    versions = manifest_lib.dataset_versions(previous) if previous else []
    manifest = manifest_lib.combine_versions(base, [*versions, manifest])
    storage.write_json(os.path.join(ctx.output, manifest_lib.MANIFEST_NAME), manifest)  # last: the proof
    storage.rmtree(ctx.tmp)
    return manifest


def _previous_versions(ctx: JobContext) -> dict | None:
    """An append's dataset as planned (None for version 1). Read again here, under the writer lock, and
    refused if it is not the version the job planned against (it never is, unless someone wrote to the
    dataset without the lock)."""
    if ctx.version == 1:
        return None
    previous = manifest_lib.read_manifest(ctx.output)
    if previous.get("version", 1) != ctx.version - 1 or previous["fingerprint"] != ctx.previous_fingerprint:
        raise RuntimeError(
            f"{ctx.output}: the dataset changed while this append ran (version {previous.get('version', 1)}, "
            f"fingerprint {previous['fingerprint'][:12]}; planned against version {ctx.version - 1}, "
            f"{(ctx.previous_fingerprint or '')[:12]})"
        )
    return previous
