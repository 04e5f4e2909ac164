"""Work planned by rows: tasks of consecutive row groups and files, and records that do not depend on
how the same rows are laid out in files and row groups."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.common import parquet
from beam_pipelines.common.parquet import InputFile, plan_tasks, resolve_inputs, target_task_rows
from beam_pipelines.make_sample import synth
from beam_pipelines.pretokenize import local, stages
from beam_pipelines.pretokenize import pipeline as pretokenize
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY, load_manifest, sha256_file

# --- planning ----------------------------------------------------------------------------------------


def _file(path: str, row_groups) -> InputFile:
    return InputFile(path=path, bytes=0, rows=sum(row_groups), row_groups=tuple(row_groups), sha256="")


def test_small_row_groups_and_files_are_combined_into_tasks_of_the_target_size():
    files = [_file("a", [10] * 25), _file("b", [50]), _file("c", [30, 0, 30]), _file("d", [5] * 4)]
    tasks = plan_tasks(files, target_rows=100)
    assert [t.rows for t in tasks] == [100, 100, 100, 80]
    assert [t.task_id for t in tasks] == ["00000", "00001", "00002", "00003"]
    # Task 2: the last five row groups of a, then all of b; task 3: c (its empty row group skipped) and d.
    assert [(p.path, p.row_groups, p.row_offset, p.rows) for p in tasks[2].pieces] == [
        ("a", (20, 21, 22, 23, 24), 200, 50),
        ("b", (0,), 0, 50),
    ]
    assert [(p.path, p.row_groups, p.row_offset, p.rows) for p in tasks[3].pieces] == [
        ("c", (0, 2), 0, 60),
        ("d", (0, 1, 2, 3), 0, 20),
    ]
    assert [t.file_index for t in tasks] == [0, 0, 0, 2]
    # Every non-empty row group is read exactly once, in (file, row group) order.
    seen = [(p.file_index, rg) for t in tasks for p in t.pieces for rg in p.row_groups]
    expected = [(fi, rg) for fi, f in enumerate(files) for rg, n in enumerate(f.row_groups) if n]
    assert seen == expected
    assert sum(t.rows for t in tasks) == sum(f.rows for f in files)


def test_a_large_row_group_is_a_task_of_its_own_and_target_one_is_a_task_per_row_group():
    files = [_file("a", [30, 500, 30, 30]), _file("b", [0, 40])]
    tasks = plan_tasks(files, target_rows=100)
    assert [[(p.file_index, p.row_groups) for p in t.pieces] for t in tasks] == [
        [(0, (0,))],  # 30 rows fall 70 short, with the next row group they would be 430 over: closed
        [(0, (1,))],
        [(0, (2, 3)), (1, (1,))],
    ]
    per_group = plan_tasks(files, target_rows=1)
    assert [(t.pieces[0].file_index, t.pieces[0].row_groups, t.pieces[0].row_offset) for t in per_group] == [
        (0, (0,), 0),
        (0, (1,), 30),
        (0, (2,), 530),
        (0, (3,), 560),
        (1, (1,), 0),
    ]
    assert all(len(t.pieces) == 1 for t in per_group)
    assert plan_tasks([_file("e", [0, 0])], target_rows=10) == []
    with pytest.raises(ValueError):
        plan_tasks(files, target_rows=0)


def test_a_task_stops_short_of_the_target_when_the_next_row_group_would_overshoot_more():
    # 250k-row groups and a 312.5k target (2.5M rows, 2 workers): one row group per task (62.5k short)
    # rather than two (187.5k over), so ten tasks instead of five keep two workers evenly busy.
    assert [t.rows for t in plan_tasks([_file("a", [250] * 10)], target_rows=312)] == [250] * 10
    # A tie (as far short as over) takes the row group.
    assert [t.rows for t in plan_tasks([_file("a", [100] * 10)], target_rows=250)] == [300, 300, 300, 100]
    assert [t.rows for t in plan_tasks([_file("a", [100] * 10)], target_rows=260)] == [300, 300, 300, 100]
    assert [t.rows for t in plan_tasks([_file("a", [100] * 10)], target_rows=240)] == [200] * 5


def test_files_of_different_schemas_do_not_share_a_task():
    a, b = pa.schema([("x", pa.int64())]), pa.schema([("x", pa.int32())])
    files = [_file(f"f{i}", [10]) for i in range(5)]
    files = [dataclasses.replace(f, schema=s) for f, s in zip(files, [a, a, b, a, a.with_metadata({b"k": b"v"})])]
    tasks = plan_tasks(files, target_rows=100)
    assert [[p.path for p in t.pieces] for t in tasks] == [["f0", "f1"], ["f2"], ["f3", "f4"]]


def test_read_task_reads_string_columns_as_dictionaries_and_plain_batch_restores_them(tmp_path):
    table = synth.generate(500, seed=2)
    table = table.set_column(2, "src_addr", table["src_addr"].cast(pa.large_string()))
    path = str(tmp_path / "a.parquet")
    pq.write_table(table, path, row_group_size=120)
    files = resolve_inputs(path)
    (task,) = plan_tasks(files)
    names = ("src_addr", "dst_addr", "msm_id")  # msm_id is no string: read as it is
    read = [(b, schema) for _, _, b, schema in parquet.read_task(task, dictionary_columns=names)]
    batches = [b for b, _ in read]
    for name in ("src_addr", "dst_addr"):
        assert all(pa.types.is_dictionary(b.schema.field(name).type) for b in batches)
    assert all(b.schema.field("msm_id").type == pa.int64() for b in batches)
    schema = read[0][1]
    assert all(s.equals(schema) for _, s in read)
    assert schema.field("src_addr").type == pa.large_string()
    plain = pa.Table.from_batches([parquet.plain_batch(b, schema) for b in batches])
    assert plain.equals(table.select(plain.column_names))


def test_target_task_rows_follows_input_and_workers_within_bounds():
    assert target_task_rows(20_000, workers=2) == parquet.MIN_TASK_ROWS
    assert target_task_rows(4_000_000, workers=2) == 500_000  # four tasks per worker
    assert target_task_rows(4_000_000, workers=8) == 125_000
    assert target_task_rows(100_000_000, workers=2) == parquet.MAX_TASK_ROWS
    # The planned tasks of 20k rows in 2,000 row groups or 400 files: one task, as for one row group.
    assert len(plan_tasks([_file("a", [10] * 2000)], workers=2)) == 1
    assert len(plan_tasks([_file(f"f{i}", [50]) for i in range(400)], workers=2)) == 1


# --- the same rows in any layout give the same records ------------------------------------------------


def _rows(n: int) -> pa.Table:
    """Synthetic rows with rejected ones and, for ties in the (source, time) order, rows repeated with
    the same source and second but another RTT (the order between them is the rows' input order)."""
    table = synth.generate(n, seed=11)
    ties = table.slice(0, n // 10)
    ties = ties.set_column(ties.schema.get_field_index("rtt"), "rtt", pa.array(np.arange(ties.num_rows, dtype=np.float64) + 0.5))
    both = pa.concat_tables([table, ties])
    order = np.random.default_rng(3).permutation(both.num_rows)  # ties spread over files and row groups
    return both.take(pa.array(order))


def _write_layout(table: pa.Table, directory, files: list[int], row_group: int | None) -> str:
    """``table`` cut into files of the given row counts, each in row groups of ``row_group`` rows."""
    os.makedirs(directory)
    start = 0
    for i, n in enumerate(files):
        part = table.slice(start, n)
        pq.write_table(part, os.path.join(directory, f"part-{i:04d}.parquet"), row_group_size=row_group or max(1, n))
        start += n
    assert start == table.num_rows
    return str(directory)


def _layouts(table: pa.Table, root) -> dict[str, str]:
    n = table.num_rows
    mixed = [7, 400, 1, 93, 250, n - 751]
    return {
        "one row group": _write_layout(table, root / "one", [n], None),
        "row groups of 10": _write_layout(table, root / "groups", [n], 10),
        "files of 50": _write_layout(table, root / "files", [50] * (n // 50) + ([n % 50] if n % 50 else []), None),
        "mixed files and row groups": _write_layout(table, root / "mixed", mixed, 13),
    }


def _context(output, files) -> stages.JobContext:
    inputs = tuple({"path": f.path, "bytes": f.bytes, "rows": f.rows, "sha256": f.sha256} for f in files)
    return stages.JobContext(
        output=str(output), seq_len=256, fractions=(0.6, 0.2, 0.2), split_by="src", cut_points=(),
        num_buckets=3, compression="zstd:3", tmp_compression="none", inputs=inputs, options={}, fingerprint="0" * 64,
    )  # fmt: skip


def _run_stages(pattern: str, output, target_rows: int | None) -> dict:
    """The job's stages in this process, in the order the pipeline runs them (tasks in reverse order,
    as a runner may finish them); returns the manifest."""
    files = resolve_inputs(pattern)
    ctx = _context(output, files)
    return local.run_stages(list(reversed(plan_tasks(files, target_rows=target_rows))), ctx)


def _records(output, manifest) -> dict:
    """Each split's record files' bytes, by sha256 of the file read here."""
    return {
        name: [sha256_file(os.path.join(output, f["path"])) for f in s["files"]] for name, s in manifest["splits"].items()
    }


def _rejected(output, manifest) -> list[dict]:
    """Rejected rows by content, without where they came from (which the layout legitimately changes)."""
    if not manifest["rejected"]["files"]:
        return []
    table = pq.read_table(os.path.join(output, "rejected"))
    return table.drop_columns(["source_file", "source_row"]).to_pylist()


def test_records_do_not_depend_on_files_row_groups_or_task_boundaries(tmp_path):
    table = _rows(2_000)
    results = []
    # Task targets: None, one task; 137, boundaries inside files; 1, a task per row group.
    targets = {"one row group": (None,), "row groups of 10": (None, 137), "files of 50": (None, 137), "mixed files and row groups": (None, 1)}
    for name, directory in _layouts(table, tmp_path / "in").items():
        for target in targets[name]:
            out = tmp_path / "out" / f"{os.path.basename(directory)}-{target}"
            manifest = _run_stages(os.path.join(directory, "*.parquet"), out, target)
            results.append((name, target, manifest, _records(out, manifest), _rejected(out, manifest)))
    _, _, first, first_records, first_rejected = results[0]
    assert first["rows"]["accepted"] > 1_000 and first["rows"]["rejected"] > 0
    assert len(first_records["train"]) == 3 and sum(len(f) for f in first_records.values()) > 3  # buckets and splits
    for name, target, manifest, records, rejected in results[1:]:
        assert records == first_records, (name, target)
        assert manifest["splits"] == first["splits"], (name, target)
        assert (manifest["rows"], manifest["rejected"]["by_reason"]) == (first["rows"], first["rejected"]["by_reason"])
        assert rejected == first_rejected, (name, target)


def test_many_small_files_are_one_task_and_one_scratch_file_per_bucket(tmp_path):
    table = _rows(2_000)
    directory = _write_layout(table, tmp_path / "in", [5] * (table.num_rows // 5), None)
    files = resolve_inputs(os.path.join(directory, "*.parquet"))
    assert len(files) == 440
    tasks = plan_tasks(files)
    assert len(tasks) == 1 and len(tasks[0].pieces) == 440
    ctx = _context(tmp_path / "out", files)
    summary = stages.encode_task(tasks[0], ctx)
    assert summary.rows == table.num_rows
    assert sorted(os.listdir(os.path.join(ctx.tmp, "progress"))) == ["encode-00000.json"]
    for bucket in summary.buckets:
        assert os.listdir(ctx.bucket_dir(bucket)) == ["00000.arrow"]
    assert os.listdir(os.path.join(ctx.tmp, stages.REJECTED_DIR)) == ["00000.parquet"]
    # Rejected rows say where they came from: the file among the 440 and the row within it.
    rejected = pq.read_table(summary.rejected_file)
    for r in rejected.select(["source_file", "source_row", "msm_id", "rtt"]).to_pylist():
        original = pq.read_table(r["source_file"]).slice(r["source_row"], 1).to_pylist()[0]
        assert (original["msm_id"], original["rtt"]) == (r["msm_id"], r["rtt"])


def test_many_small_files_through_the_pipeline(tmp_path):
    """400 files of 5 rows: one task, so about the cost of one file (it took seconds when every file
    was a task); the records are those of the same rows in one file."""
    table = _rows(2_000).slice(0, 2_000)
    small = _write_layout(table, tmp_path / "small", [5] * (table.num_rows // 5), None)
    one = _write_layout(table, tmp_path / "one", [table.num_rows], None)
    outs = {}
    for name, directory in (("small", small), ("one", one)):
        outs[name] = tmp_path / f"out-{name}"
        args = ["--input", directory, "--output", str(outs[name]), "--seq_len", "256", IN_MEMORY]
        assert pretokenize.run(args) == 0
    manifests = {k: load_manifest(v) for k, v in outs.items()}
    assert len(manifests["small"]["inputs"]) == 400
    assert manifests["small"]["splits"] == manifests["one"]["splits"]
    assert _records(outs["small"], manifests["small"]) == _records(outs["one"], manifests["one"])
    assert _rejected(outs["small"], manifests["small"]) == _rejected(outs["one"], manifests["one"])
