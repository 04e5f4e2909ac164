"""Arrow fragments -> Parquet shards, and the ingest manifest. No Beam here.

Once every work unit is done (:mod:`beam_pipelines.ingest_atlas.read_unit`), its fragments are cut into
Parquet shards of a fixed number of rows in (file, line) order, so the shard boundaries depend only on
the inputs and options, not on the runner or the number of workers. Rejected lines are sharded the
same way, so their files are bounded by their number, not by the number of work units. The output
directory's layout (shard names, ``rejected/``, ``manifest.json``, ``_SUCCESS``) is defined here, and
so are the manifest's versions (``--append``): :func:`append_version` adds one to a complete manifest.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_pipelines.common import storage
from beam_pipelines.common.files import atomic_path, sha256_file
from beam_pipelines.ingest_atlas.convert import REJECTED_SCHEMA, ROW_SCHEMA
from beam_pipelines.ingest_atlas.fragments import COUNT_FIELDS, Fragment, UnitSummary

DEFAULT_SHARD_ROWS = 1_000_000
ROW_GROUP_ROWS = 1 << 17  # Parquet row group: the unit of work of the pretokenizer
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SUCCESS_NAME = "_SUCCESS"
REJECTED_DIR = "rejected"
TMP_DIR = "_tmp_ingest"
SHARD_KINDS = ("rows", "rejected")  # row shards, and shards of rejected lines
_SCHEMAS = {"rows": ROW_SCHEMA, "rejected": REJECTED_SCHEMA}
# Version 1's shards keep the names they always had; version N >= 2 adds ``vNNNNN-`` (sorted after version 1's).
_SHARD_NAME = re.compile(r"^part-(v\d{5}-)?\d{5}-of-\d{5}\.parquet$")


@dataclasses.dataclass(frozen=True)
class ShardPiece:
    """A run of consecutive rows of one fragment that goes into a shard."""

    fragment: Fragment
    start: int  # first row within the fragment
    rows: int
    line_offset: int  # lines of the file before the fragment's unit: makes a range's line numbers file-global


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """One shard to write: its kind (``"rows"`` or ``"rejected"``), place and pieces, in order."""

    kind: str
    index: int
    path: str  # relative to the output directory
    pieces: tuple[ShardPiece, ...]


@dataclasses.dataclass(frozen=True)
class ShardSummary:
    """One written shard."""

    kind: str  # "rows" or "rejected"
    path: str  # relative to the output directory
    rows: int
    bytes: int
    sha256: str

    def manifest_entry(self) -> dict:
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}


def shard_path(kind: str, index: int, count: int, version: int = 1) -> str:
    """Path of a shard relative to the output directory.

    Version 1 (a plain run): ``part-00000-of-00004.parquet``, ``rejected/rejected-00000-of-00001.parquet``.
    Version N >= 2 (``--append``): ``part-v0000N-00000-of-00002.parquet``, ``rejected/rejected-v0000N-...``:
    names no earlier version uses, sorted after every earlier version's, so a glob reads versions in order.
    """
    tag = f"v{version:05d}-" if version > 1 else ""
    if kind == "rows":
        return f"part-{tag}{index:05d}-of-{count:05d}.parquet"
    return f"{REJECTED_DIR}/rejected-{tag}{index:05d}-of-{count:05d}.parquet"


def is_shard_name(name: str) -> bool:
    """Whether ``name`` is one of this job's row shard file names (``part-00000-of-00004.parquet``)."""
    return bool(_SHARD_NAME.match(name))


def _in_order(units: Sequence[UnitSummary]) -> list[UnitSummary]:
    return sorted(units, key=lambda u: (u.file_index, u.range_index))


def plan_shards(units: Sequence[UnitSummary], shard_rows: int, version: int = 1) -> list[ShardSpec]:
    """Shard specs for rows and rejected lines: consecutive runs of ``shard_rows`` in (file, line) order.

    Always at least one shard of each kind (possibly empty), so ``DIR/*.parquet`` and
    ``DIR/rejected/*.parquet`` always match. ``version`` names the shards (:func:`shard_path`).
    """
    units = _in_order(units)
    line_offset, offsets = Counter(), []
    for u in units:
        offsets.append(line_offset[u.file_index])
        line_offset[u.file_index] += u.lines
    specs = []
    for kind in SHARD_KINDS:
        sources = [(u.fragment(kind), off) for u, off in zip(units, offsets) if u.fragment(kind)]
        count = max(1, -(-sum(f.rows for f, _ in sources) // shard_rows))
        pieces: list[list[ShardPiece]] = [[] for _ in range(count)]
        position = 0  # global row index of the first row of the current fragment
        for fragment, off in sources:
            lo, end = position, position + fragment.rows
            while lo < end:
                shard = lo // shard_rows
                hi = min(end, (shard + 1) * shard_rows)
                pieces[shard].append(ShardPiece(fragment, lo - position, hi - lo, off))
                lo = hi
            position = end
        specs.extend(ShardSpec(kind, i, shard_path(kind, i, count, version), tuple(p)) for i, p in enumerate(pieces))
    return specs


def _piece_batches(piece: ShardPiece) -> Iterator[pa.RecordBatch]:
    path = piece.fragment.path
    # A fragment in an object store is read whole (a work unit's rows: tens of MB at most).
    reader = pa.ipc.open_file(pa.py_buffer(storage.read_bytes(path)) if storage.is_remote(path) else pa.memory_map(path))
    lo, hi = piece.start, piece.start + piece.rows
    first = 0
    for i, n in enumerate(piece.fragment.batches):
        if first + n > lo and first < hi:
            batch = reader.get_batch(i)
            a, b = max(lo, first) - first, min(hi, first + n) - first
            yield batch.slice(a, b - a)
        first += n
        if first >= hi:
            break


def write_shard(spec: ShardSpec, output: str, row_group_rows: int = ROW_GROUP_ROWS) -> ShardSummary:
    """Write one shard (zstd Parquet, fixed row groups) under a temporary name, then rename it.

    In an object store the shard is written on this worker's disk, then uploaded, and the object is checked
    (size and sha256 read back) before its summary goes to the manifest.
    """
    path = os.path.join(output, spec.path)
    if storage.is_remote(path):
        with storage.local_tmpdir() as local_dir:
            local = os.path.join(local_dir, os.path.basename(path))
            rows = _write_shard_file(spec, local, row_group_rows)
            size, digest = storage.upload(local, path, verify_sha256=True)
        return ShardSummary(spec.kind, spec.path, rows, size, digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        rows = _write_shard_file(spec, tmp, row_group_rows)
    return ShardSummary(spec.kind, spec.path, rows, os.path.getsize(path), sha256_file(path))


def _write_shard_file(spec: ShardSpec, tmp: str, row_group_rows: int) -> int:
    """The shard's rows into the local Parquet file ``tmp``; returns the number of rows."""
    schema = _SCHEMAS[spec.kind]
    rows = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for piece in spec.pieces:
            for batch in _piece_batches(piece):
                if spec.kind == "rejected" and piece.line_offset:
                    numbers = pc.add(batch.column("line_number"), pa.scalar(piece.line_offset, pa.int64()))
                    batch = batch.set_column(1, "line_number", numbers)
                pending.append(batch)
                pending_rows += batch.num_rows
                # Row groups of exactly row_group_rows rows, whatever the pieces: the bytes depend on the rows only.
                while pending_rows >= row_group_rows:
                    table = pa.Table.from_batches(pending, schema)
                    writer.write_table(table.slice(0, row_group_rows), row_group_size=row_group_rows)
                    rest = table.slice(row_group_rows)
                    pending, pending_rows = rest.to_batches(), rest.num_rows
                    rows += row_group_rows
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=row_group_rows)
            rows += pending_rows
    return rows


# --- the manifest ------------------------------------------------------------------------------------


def build_manifest(
    units: Sequence[UnitSummary], shards: Sequence[ShardSummary], inputs: Sequence[dict], options: dict
) -> dict:
    """The output's manifest: counts by input, rejected by reason, skipped by type, shards. Deterministic."""
    per_file: dict[int, Counter] = {}
    rejected, skipped = Counter(), Counter()
    for u in _in_order(units):
        c = per_file.setdefault(u.file_index, Counter())
        for key in COUNT_FIELDS:
            c[key] += getattr(u, key)
        c["rejected"] += sum(u.rejected.values())
        c["skipped"] += sum(u.skipped.values())
        rejected.update(u.rejected)
        skipped.update(u.skipped)
    keys = (*COUNT_FIELDS, "rejected", "skipped")
    files = [{**dict(i), **{k: per_file.get(i["index"], Counter())[k] for k in keys}} for i in inputs]
    totals = {k: sum(f[k] for f in files) for k in keys}
    by_kind = {kind: sorted((s for s in shards if s.kind == kind), key=lambda s: s.path) for kind in SHARD_KINDS}
    manifest = {
        "format_version": FORMAT_VERSION,
        "job": "ingest_atlas",
        "schema": {f.name: str(f.type) for f in ROW_SCHEMA},
        "options": dict(options),
        "inputs": files,
        "totals": totals,
        "rejected": {"total": sum(rejected.values()), "by_reason": dict(sorted(rejected.items()))},
        "skipped": {"total": sum(skipped.values()), "by_type": dict(sorted(skipped.items()))},
        "shards": [s.manifest_entry() for s in by_kind["rows"]],
        "rejected_files": [s.manifest_entry() for s in by_kind["rejected"]],
    }
    # Nothing is dropped silently: every value read is a result with rows, a skipped or a rejected one.
    if totals["records"] != totals["converted"] + totals["skipped"] + totals["rejected"]:
        raise RuntimeError(f"ingest_atlas: counts do not add up: {totals}")
    if sum(s.rows for s in by_kind["rows"]) != totals["rows"]:
        raise RuntimeError("ingest_atlas: the shards do not hold every row")
    if sum(s.rows for s in by_kind["rejected"]) != totals["rejected"]:
        raise RuntimeError("ingest_atlas: the rejected files do not hold every rejected line")
    return manifest


# --- versions (--append) -----------------------------------------------------------------------------

_VERSION_KEYS = ("inputs", "totals", "rejected", "skipped", "shards", "rejected_files")


def created_now() -> str:
    """The creation time of a version, UTC to the second (``2026-11-30T10:00:00Z``): from the
    ``SOURCE_DATE_EPOCH`` environment variable when set (the reproducible-builds convention, so that two
    runs can give byte-identical manifests), else the clock."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else (
        datetime.datetime.now(datetime.timezone.utc)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def version_fingerprint(previous: str, inputs: Sequence[dict], options: dict) -> str:
    """The fingerprint of a version N >= 2: sha256 over the previous version's fingerprint, this version's
    inputs (path, bytes, sha256) and the options, so it names the whole history up to this version."""
    payload = {
        "format_version": FORMAT_VERSION,
        "previous": previous,
        "inputs": [{"path": i["path"], "bytes": i["bytes"], "sha256": i.get("sha256")} for i in inputs],
        "options": dict(options),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def versions(manifest: dict) -> list[dict]:
    """The manifest's versions, oldest first. A manifest of a plain run (no ``versions`` key) is one
    version, version 1, whose ``created`` is null (a plain run records no creation time)."""
    if "versions" in manifest:
        return list(manifest["versions"])
    first = {k: manifest[k] for k in _VERSION_KEYS}
    return [{"version": 1, "created": None, "fingerprint": manifest["fingerprint"], "options": manifest["options"], **first}]


def _merge_counts(a: dict, b: dict) -> dict:
    """Two ``{"total", "by_reason"|"by_type"}`` counts summed."""
    key = "by_reason" if "by_reason" in a else "by_type"
    merged = Counter(a[key])
    merged.update(b[key])
    return {"total": a["total"] + b["total"], key: dict(sorted(merged.items()))}


def append_version(previous: dict | None, current: dict, created: str) -> dict:
    """The manifest after adding ``current`` (a :func:`build_manifest` of this run's files alone, with its
    ``fingerprint``) as the next version of ``previous`` (None: it is version 1).

    Top-level keys keep their meaning for the output as a whole: ``inputs``, ``shards`` and
    ``rejected_files`` list every version's (oldest first), ``totals``, ``rejected`` and ``skipped`` are
    sums, ``options`` are version 1's (every version's are the same), ``fingerprint`` is the latest
    version's. ``version`` is the latest version's number; ``versions`` lists each version's own inputs,
    shards, counts, options, fingerprint and ``created``.
    """
    earlier = versions(previous) if previous else []
    number = len(earlier) + 1
    entry = {
        "version": number,
        "created": created,
        "fingerprint": current["fingerprint"],
        "options": current["options"],
        **{k: current[k] for k in _VERSION_KEYS},
    }
    if previous is None:
        return {**current, "version": 1, "versions": [entry]}
    if previous["schema"] != current["schema"]:
        raise RuntimeError("ingest_atlas: this run's row schema differs from the output's; it cannot be appended")
    totals = {k: previous["totals"][k] + current["totals"][k] for k in previous["totals"]}
    return {
        **previous,
        "inputs": previous["inputs"] + current["inputs"],
        "totals": totals,
        "rejected": _merge_counts(previous["rejected"], current["rejected"]),
        "skipped": _merge_counts(previous["skipped"], current["skipped"]),
        "shards": previous["shards"] + current["shards"],
        "rejected_files": previous["rejected_files"] + current["rejected_files"],
        "fingerprint": current["fingerprint"],
        "version": number,
        "versions": [*earlier, entry],
    }


def listed_files(manifest: dict) -> set[str]:
    """Every shard path (relative) the manifest lists, rows and rejected lines, of every version."""
    return {f["path"] for f in manifest["shards"]} | {f["path"] for f in manifest["rejected_files"]}
