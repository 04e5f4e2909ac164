"""beam_pipelines.ingest_atlas.shards without Beam: fragments -> fixed-size Parquet shards, and the manifest."""

from __future__ import annotations

import pickle

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.ingest_atlas import convert as atlas
from beam_pipelines.ingest_atlas import discovery, read_unit, shards
from beam_pipelines.ingest_atlas.fragments import Fragment, UnitSummary


def _unit(f, r, rows, rejected, lines) -> UnitSummary:
    return UnitSummary(
        unit=f"{f:05d}-{r:05d}", file_index=f, range_index=r, path=f"in-{f}", bytes_read=0, lines=lines,
        blank_lines=0, records=lines, converted=sum(rows), rows=sum(rows), without_rows=0,
        rejected={"invalid_json": sum(rejected)} if rejected else {}, skipped={},
        rows_fragment=Fragment(f"rows-{f}-{r}", tuple(rows)) if rows else None,
        rejected_fragment=Fragment(f"rej-{f}-{r}", tuple(rejected)) if rejected else None,
    )  # fmt: skip


def test_plan_shards_cuts_fixed_runs_in_unit_order():
    units = [_unit(1, 0, [3], [], 4), _unit(0, 1, [4, 2], [1], 7), _unit(0, 0, [5], [2], 6)]
    specs = shards.plan_shards(units, shard_rows=4)
    assert all(isinstance(s, shards.ShardSpec) for s in specs)
    rows = [s for s in specs if s.kind == "rows"]
    assert [s.path for s in rows] == [f"part-0000{i}-of-00004.parquet" for i in range(4)]
    flat = [[(p.fragment.path, p.start, p.rows) for p in s.pieces] for s in rows]
    assert flat == [
        [("rows-0-0", 0, 4)],
        [("rows-0-0", 4, 1), ("rows-0-1", 0, 3)],
        [("rows-0-1", 3, 3), ("rows-1-0", 0, 1)],
        [("rows-1-0", 1, 2)],
    ]
    rejected = [s for s in specs if s.kind == "rejected"]
    assert [s.path for s in rejected] == ["rejected/rejected-00000-of-00001.parquet"]
    assert [(p.fragment.path, p.line_offset) for p in rejected[0].pieces] == [("rej-0-0", 0), ("rej-0-1", 6)]
    empty = shards.plan_shards([_unit(0, 0, [], [], 0)], shard_rows=4)
    assert [(s.path, s.pieces) for s in empty] == [
        ("part-00000-of-00001.parquet", ()),
        ("rejected/rejected-00000-of-00001.parquet", ()),
    ]
    assert pickle.loads(pickle.dumps(specs)) == specs  # specs travel between Beam workers


def test_rejected_lines_of_many_units_share_bounded_files():
    """Rejected lines are sharded like rows: by their number, not one file per work unit."""
    units = [_unit(0, r, [1], [2], 3) for r in range(50)]
    rejected = [s for s in shards.plan_shards(units, shard_rows=40) if s.kind == "rejected"]
    assert [s.path for s in rejected] == [f"rejected/rejected-0000{i}-of-00003.parquet" for i in range(3)]
    assert [sum(p.rows for p in s.pieces) for s in rejected] == [40, 40, 20]


def test_ingest_unit_and_write_shard(tmp_path):
    """One plain file in two byte ranges -> fragments -> shards: rows in order, line numbers file-global."""
    good = orjson.loads(
        b'{"af":4,"dst_addr":"192.0.2.1","from":"198.51.100.7","msm_id":1001,"prb_id":1,"result":[{"rtt":1.5}],'
        b'"sent":1,"rcvd":1,"size":48,"timestamp":1700000000,"type":"ping"}'
    )
    lines = []
    for i in range(40):
        if i % 10 == 3:
            lines.append(b"not json")
        elif i % 10 == 7:
            lines.append(b'{"type":"traceroute"}')
        else:
            lines.append(orjson.dumps({**good, "msm_id": i}))
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    files = discovery.inspect_inputs([str(path)])
    units = discovery.plan_units(files, split_bytes=path.stat().st_size // 2)
    assert len(units) == 2
    summaries = [read_unit.ingest_unit(u, str(tmp_path), batch_rows=7) for u in units]
    assert sum(s.lines for s in summaries) == 40
    assert sum(s.rows for s in summaries) == 32
    assert sum(s.skipped.get("traceroute", 0) for s in summaries) == 4
    out = tmp_path / "out"
    written = [shards.write_shard(spec, str(out), row_group_rows=5) for spec in shards.plan_shards(summaries, 10)]
    assert all(isinstance(s, shards.ShardSummary) for s in written)
    table = pq.read_table(out / "part-00000-of-00004.parquet")
    assert pq.ParquetFile(out / "part-00000-of-00004.parquet").metadata.num_row_groups == 2
    msm = pa.concat_tables(pq.read_table(out / f"part-0000{i}-of-00004.parquet") for i in range(4))["msm_id"]
    assert msm.to_pylist() == [i for i in range(40) if i % 10 not in (3, 7)]
    assert table.schema.equals(atlas.ROW_SCHEMA)
    rejected = pq.read_table(out / "rejected" / "rejected-00000-of-00001.parquet").to_pylist()
    assert [(r["line_number"], r["reason"], r["raw_line"]) for r in rejected] == [
        (n, "invalid_json", "not json") for n in (4, 14, 24, 34)
    ]
    assert {r["file"] for r in rejected} == {str(path)}
    manifest = shards.build_manifest(summaries, written, [{"index": 0, "path": str(path), "bytes": 1}], {})
    assert manifest["totals"] == {
        "lines": 40, "blank_lines": 0, "records": 40, "converted": 32, "rows": 32, "without_rows": 0,
        "rejected": 4, "skipped": 4,
    }  # fmt: skip
    assert [s["rows"] for s in manifest["shards"]] == [10, 10, 10, 2]
    assert set(manifest["shards"][0]) == {"path", "rows", "bytes", "sha256"}
    assert [s["path"] for s in manifest["rejected_files"]] == ["rejected/rejected-00000-of-00001.parquet"]


def test_build_manifest_refuses_shards_that_miss_rows():
    units = [_unit(0, 0, [3], [], 3)]
    short = [shards.ShardSummary("rows", "part-00000-of-00001.parquet", 2, 10, "0" * 64)]
    empty_rejected = [shards.ShardSummary("rejected", "rejected/rejected-00000-of-00001.parquet", 0, 10, "0" * 64)]
    with pytest.raises(RuntimeError, match="do not hold every row"):
        shards.build_manifest(units, short + empty_rejected, [{"index": 0}], {})


def test_shard_names():
    assert shards.is_shard_name("part-00000-of-00004.parquet")
    assert not shards.is_shard_name("part-0-of-4.parquet") and not shards.is_shard_name("notes.txt")
    assert shards.shard_path("rejected", 2, 3) == "rejected/rejected-00002-of-00003.parquet"
