"""pretokenize stages without Beam: typed summaries and rejected rows gathered into a bounded number of files."""

from __future__ import annotations

import math
import os
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.common.parquet import plan_tasks, resolve_inputs
from beam_pipelines.make_sample import synth
from beam_pipelines.pretokenize import pipeline as pretokenize
from beam_pipelines.pretokenize import stages
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY, load_manifest
from tokenizer import encode_table

ROW_GROUP = 40  # rows per row group of the inputs below: many row groups from few rows


def _with_bad_rows(table: pa.Table, every: int) -> pa.Table:
    """Every ``every``-th row gets an empty source address (rejected as ``empty_src_addr``)."""
    src = table["src_addr"].to_pylist()
    for i in range(0, len(src), every):
        src[i] = ""
    return table.set_column(table.schema.get_field_index("src_addr"), "src_addr", pa.array(src, table["src_addr"].type))


def _valid_rows(rows: int, seed: int) -> pa.Table:
    """``rows`` synthetic rows the tokenizer accepts (synth also makes some bad ones, like real data)."""
    table = synth.generate(rows + rows // 5, seed=seed)
    return table.take(pa.array(encode_table(table).accepted)).slice(0, rows)


def _write_input(path, rows: int, seed: int, every: int, size_type=None) -> pa.Table:
    table = _with_bad_rows(_valid_rows(rows, seed), every)
    assert table.num_rows == rows
    if size_type is not None:
        table = table.set_column(table.schema.get_field_index("size"), "size", table["size"].cast(size_type))
    pq.write_table(table, path, row_group_size=ROW_GROUP)
    return table


def _context(output, inputs) -> stages.JobContext:
    return stages.JobContext(
        output=str(output),
        seq_len=1024,
        fractions=(0.8, 0.1, 0.1),
        split_by="src",
        cut_points=(),
        num_buckets=2,
        compression="zstd:3",
        tmp_compression="none",
        inputs=tuple({"path": f.path, "bytes": f.bytes, "rows": f.rows, "sha256": f.sha256} for f in inputs),
        options={},
        fingerprint="0" * 64,
    )


def _expected_rejected(paths_and_tables, every: int) -> list[tuple]:
    """(source_file, source_row, src_addr, msm_id) of every bad row, in (file, row) order, found independently."""
    return [
        (str(path), i, "", table["msm_id"][i].as_py())
        for path, table in paths_and_tables
        for i in range(0, table.num_rows, every)
    ]


def _rejected_rows(output, paths) -> list[tuple]:
    rows = []
    for rel in paths:
        for r in pq.ParquetFile(os.path.join(output, rel)).read().to_pylist():
            rows.append((r["source_file"], r["source_row"], r["src_addr"], r["msm_id"]))
            assert r["reason"] == "empty_src_addr"
    return rows


def test_plan_rejected_files_caps_rows_and_breaks_on_schema():
    a, b = pa.schema([("x", pa.int64())]), pa.schema([("x", pa.int32())])
    parts = [("p0", 3, a), ("p1", 5, a), ("p2", 0, a), ("p3", 2, b), ("p4", 4, b)]
    assert stages.plan_rejected_files(parts, rows_per_file=4) == [
        [("p0", 0, 3), ("p1", 0, 1)],
        [("p1", 1, 4)],
        [("p3", 0, 2), ("p4", 0, 2)],  # a new schema starts a new file
        [("p4", 2, 2)],
    ]
    assert stages.plan_rejected_files([], rows_per_file=4) == []
    # However many parts, the files are about total / rows_per_file.
    many = [(f"p{i}", 3, a) for i in range(1000)]
    assert len(stages.plan_rejected_files(many, rows_per_file=1000)) == 3


def test_encode_summaries_are_typed_and_picklable(tmp_path):
    path = tmp_path / "in.parquet"
    _write_input(path, 200, seed=1, every=7)
    files = resolve_inputs(str(path))
    ctx = _context(tmp_path / "out", files)
    summary = stages.encode_task(plan_tasks(files, target_rows=1)[0], ctx)  # one row group
    assert isinstance(summary, stages.EncodeSummary)
    assert (summary.rows, summary.accepted, summary.rejected) == (ROW_GROUP, ROW_GROUP - 6, {"empty_src_addr": 6})
    assert summary.rejected_rows == 6 and all(isinstance(b, int) for b in summary.buckets)
    assert pickle.loads(pickle.dumps(summary)) == summary
    with pytest.raises(AttributeError):
        summary.rows = 0  # frozen: a stage cannot change another's result


def test_many_row_groups_give_a_bounded_number_of_rejected_files(tmp_path):
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    tables = [_write_input(paths[0], 1000, seed=1, every=3), _write_input(paths[1], 600, seed=2, every=5)]
    files = resolve_inputs(str(tmp_path / "*.parquet"))
    tasks = plan_tasks(files, target_rows=1)
    assert len(tasks) == 40  # one task, so one scratch file of rejected rows, per row group
    ctx = _context(tmp_path / "out", files)
    summaries = [stages.encode_task(t, ctx) for t in reversed(tasks)]  # any completion order
    total = sum(s.rejected_rows for s in summaries)
    assert total == 334 + 120

    rel = stages.gather_rejected(summaries, ctx.output, rows_per_file=100)
    assert len(rel) == math.ceil(total / 100) == 5
    assert rel == [f"rejected/rejected-{i:05d}-of-00005.parquet" for i in range(5)]
    assert [pq.ParquetFile(os.path.join(ctx.output, p)).metadata.num_rows for p in rel] == [100, 100, 100, 100, 54]
    # Every rejected row exactly once, in (file, row) order, with all its columns.
    assert _rejected_rows(ctx.output, rel) == [
        *_expected_rejected([(paths[0], tables[0])], 3),
        *_expected_rejected([(paths[1], tables[1])], 5),
    ]
    columns = pq.read_schema(os.path.join(ctx.output, rel[0])).names
    assert columns == [*tables[0].column_names, "reason", "source_file", "source_row"]


@pytest.mark.parametrize("target_rows", [1, None])  # a task per row group; tasks as large as the plan allows
def test_inputs_of_different_schemas_do_not_share_a_rejected_file(tmp_path, target_rows):
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    tables = [
        _write_input(paths[0], 200, seed=1, every=4),
        _write_input(paths[1], 200, seed=2, every=4, size_type=pa.int32()),
    ]
    files = resolve_inputs(str(tmp_path / "*.parquet"))
    ctx = _context(tmp_path / "out", files)
    tasks = plan_tasks(files, target_rows=target_rows)
    assert len(tasks) == (10 if target_rows == 1 else 2)  # files of different schemas never share a task
    summaries = [stages.encode_task(t, ctx) for t in tasks]
    rel = stages.gather_rejected(summaries, ctx.output)
    assert len(rel) == 2
    schemas = [pq.read_schema(os.path.join(ctx.output, p)) for p in rel]
    assert [s.field("size").type for s in schemas] == [pa.int64(), pa.int32()]
    assert _rejected_rows(ctx.output, rel) == [
        *_expected_rejected([(paths[0], tables[0])], 4),
        *_expected_rejected([(paths[1], tables[1])], 4),
    ]


@pytest.mark.parametrize(
    "src_type, dst_type",
    [(pa.large_string(), pa.string()), (pa.string(), pa.dictionary(pa.int32(), pa.string()))],
)
def test_rejected_rows_keep_the_input_column_types(tmp_path, src_type, dst_type):
    """Addresses are read as dictionaries for the encoder; the rejected rows are written as the input holds
    them (its types, in a file of several row groups, so of several dictionaries), and the records are those of
    the same rows read as plain strings."""
    table = _with_bad_rows(_valid_rows(300, seed=4), every=7)
    table = table.set_column(2, "src_addr", table["src_addr"].cast(src_type))
    table = table.set_column(3, "dst_addr", table["dst_addr"].cast(dst_type))
    path = tmp_path / "in.parquet"
    pq.write_table(table, path, row_group_size=ROW_GROUP)
    files = resolve_inputs(str(path))
    ctx = _context(tmp_path / "out", files)
    summaries = [stages.encode_task(t, ctx) for t in plan_tasks(files)]
    rejected = pq.read_table(summaries[0].rejected_file)
    assert rejected.schema.field("src_addr").type == src_type and rejected.schema.field("dst_addr").type == dst_type
    assert rejected.num_rows == len(range(0, 300, 7))
    expected = table.take(pa.array(rejected["source_row"]))
    assert rejected.select(table.column_names).equals(expected)


def test_no_rejected_rows_no_rejected_files(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(_valid_rows(100, seed=1), path, row_group_size=ROW_GROUP)
    files = resolve_inputs(str(path))
    ctx = _context(tmp_path / "out", files)
    summaries = [stages.encode_task(t, ctx) for t in plan_tasks(files, target_rows=1)]
    assert all(s.rejected_file is None for s in summaries)
    assert stages.gather_rejected(summaries, ctx.output) == []
    assert not os.path.exists(os.path.join(ctx.output, stages.REJECTED_DIR))


@pytest.mark.slow
def test_pipeline_keeps_rejected_rows_of_many_row_groups_in_one_file(tmp_path, capsys):
    path = tmp_path / "in" / "a.parquet"
    path.parent.mkdir()
    table = _write_input(path, 2000, seed=3, every=9)  # 50 row groups, each with rejected rows
    out = tmp_path / "out"
    assert pretokenize.run(["--input", str(path), "--output", str(out), IN_MEMORY]) == 0
    manifest = load_manifest(out)
    assert manifest["rejected"]["files"] == ["rejected/rejected-00000-of-00001.parquet"]
    assert sorted(os.listdir(out / "rejected")) == ["rejected-00000-of-00001.parquet"]
    rows = _rejected_rows(out, manifest["rejected"]["files"])
    assert rows == _expected_rejected([(path, table)], 9)
    assert len(rows) == manifest["rejected"]["total"] == manifest["rows"]["rejected"] == 223
