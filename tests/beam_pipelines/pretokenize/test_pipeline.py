"""End-to-end tests of ``python -m beam_pipelines.pretokenize`` on the bundled sample and generated data."""

from __future__ import annotations

import collections
import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.pretokenize import pipeline as pretokenize

from beam_pipelines.make_sample import synth
from beam_pipelines.make_sample.shards import write_shards
from tests.beam_pipelines.pretokenize.helpers import (
    IN_MEMORY,
    canonical,
    decoded_records,
    input_rows,
    load_manifest,
    pad_fraction,
    read_split,
    row_key,
    sha256_file,
    tree_digest,
)
from tokenizer import PAD

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def sample_run(sample_dataset):
    # The session's run of this same command (tests/conftest.py), with this package's SOURCE_DATE_EPOCH; the
    # tests below only read it (a rerun must leave it as it is).
    out = sample_dataset
    manifest = load_manifest(out)
    records = {s: read_split(out, manifest, s) for s in SPLITS}
    decoded = {s: decoded_records(records[s]) for s in SPLITS}
    return out, manifest, records, decoded


@pytest.mark.slow
def test_every_record_decodes_to_the_input_rows(sample_run, sample_dir):
    out, manifest, _, decoded = sample_run
    rows = input_rows(sorted(glob.glob(str(sample_dir / "*.parquet"))))
    rejected = pq.read_table(os.path.join(out, "rejected")).to_pylist()
    rejected_at = {(r["source_file"], r["source_row"]) for r in rejected}
    assert len(rejected_at) == len(rejected) == manifest["rejected"]["total"]
    kept = []
    for r in rows:
        if (r["source_file"], r["source_row"]) in rejected_at:
            continue
        r = dict(r, src_addr=canonical(r["src_addr"]), dst_addr=canonical(r["dst_addr"]))
        kept.append(row_key(r))
    got = [row_key(m) for s in SPLITS for rec in decoded[s] for m in rec]
    assert len(kept) + len(rejected) == len(rows) == manifest["rows"]["read"]
    assert collections.Counter(got) == collections.Counter(kept)  # multiset equality


@pytest.mark.slow
def test_rejected_rows_are_kept_with_reasons(sample_run, sample_dir):
    out, manifest, _, _ = sample_run
    rejected = pq.read_table(os.path.join(out, "rejected"))
    assert set(rejected.column_names) >= {"reason", "source_file", "source_row", "src_addr", "dst_addr"}
    counts = collections.Counter(rejected["reason"].to_pylist())
    assert dict(counts) == manifest["rejected"]["by_reason"]
    # The sample's dirty rows: empty or malformed sources, null destinations.
    for row in rejected.to_pylist():
        original = pq.read_table(row["source_file"]).slice(row["source_row"], 1).to_pylist()[0]
        assert original["src_addr"] == row["src_addr"] and original["dst_addr"] == row["dst_addr"]
        if row["reason"] == "null_dst_addr":
            assert row["dst_addr"] is None
        if row["reason"] == "empty_src_addr":
            assert row["src_addr"] == ""


@pytest.mark.slow
def test_splits_are_disjoint_by_source(sample_run):
    _, manifest, _, decoded = sample_run
    sources = {s: {m["src_addr"] for rec in decoded[s] for m in rec} for s in SPLITS}
    assert not sources["train"] & sources["val"]
    assert not sources["train"] & sources["test"]
    assert not sources["val"] & sources["test"]
    for s in SPLITS:
        assert manifest["splits"][s]["sources"] == len(sources[s])
    total = sum(manifest["splits"][s]["measurements"] for s in SPLITS)
    assert manifest["splits"]["train"]["measurements"] / total == pytest.approx(0.8, abs=0.08)


def _check_grouping(decoded_split):
    """Runs of one source, time-ordered, one run per source per record; histories continue in order."""
    last_time = {}
    continuous = total = 0
    for rec in decoded_split:
        runs = []
        for i, m in enumerate(rec):
            total += 1
            if i and rec[i - 1]["src_addr"] == m["src_addr"]:
                continuous += 1
                assert rec[i - 1]["event_time_s"] <= m["event_time_s"], "time goes backwards within a run"
            else:
                runs.append(m["src_addr"])
            assert last_time.get(m["src_addr"], -(2**62)) <= m["event_time_s"], "history out of time order"
            last_time[m["src_addr"]] = m["event_time_s"]
        assert len(runs) == len(set(runs)), "a source has two runs in one record"
    return continuous / total


@pytest.mark.slow
def test_grouping_time_order_and_continuity(sample_run):
    _, manifest, _, decoded = sample_run
    for s in SPLITS:
        continuity = _check_grouping(decoded[s])
        assert continuity >= 0.8
        assert manifest["splits"][s]["context_continuity"] == pytest.approx(continuity)


@pytest.mark.slow
def test_records_are_whole_measurements_then_pad_and_padding_is_low(sample_run):
    _, manifest, records, decoded = sample_run
    all_records = np.concatenate([records[s] for s in SPLITS])
    assert all_records.shape[1] == 1024 and all_records.dtype == np.uint16
    for rec in all_records:
        pads = np.flatnonzero(rec == PAD)
        if len(pads):
            assert np.all(rec[pads[0] :] == PAD)  # PAD only as a suffix
        assert rec[0] == 0  # starts with MeasurementStart
    assert pad_fraction(all_records) <= 0.01
    for s in SPLITS:
        m = manifest["splits"][s]
        assert m["records"] == len(records[s])
        assert m["pad_tokens"] == int(np.sum(records[s] == PAD))
        assert m["tokens"] == records[s].size - m["pad_tokens"]
        assert m["measurements"] == sum(len(r) for r in decoded[s])


@pytest.mark.slow
def test_manifest_files_and_hashes(sample_run):
    out, manifest, _, _ = sample_run
    assert manifest["format_version"] == 1
    assert manifest["tokenizer"] == {"name": "v1", "version": 1, "vocab_size": 267, "pad_id": 266}
    assert manifest["seq_len"] == 1024
    for s in SPLITS:
        files = manifest["splits"][s]["files"]
        n = len(files)
        for i, f in enumerate(files):
            assert f["path"] == f"{s}/{s}-{i:05d}-of-{n:05d}.array_record"
            path = os.path.join(out, f["path"])
            assert os.path.getsize(path) == f["bytes"]
            assert sha256_file(path) == f["sha256"]
        assert sum(f["records"] for f in files) == manifest["splits"][s]["records"]
    assert len(manifest["fingerprint"]) == 64
    assert [i["rows"] for i in manifest["inputs"]] == [30_000] * 4
    assert not os.path.exists(os.path.join(out, "_tmp"))
    # The only files are the dataset's own.
    names = set(os.listdir(out))
    assert names == {"manifest.json", "train", "val", "test", "rejected"}


@pytest.mark.slow
def test_grain_reads_records_by_index(sample_run):
    from grain.python import ArrayRecordDataSource

    out, manifest, records, _ = sample_run
    paths = [os.path.join(out, f["path"]) for f in manifest["splits"]["train"]["files"]]
    source = ArrayRecordDataSource(paths)
    assert len(source) == manifest["splits"]["train"]["records"]
    for i in (0, len(source) // 2, len(source) - 1):
        assert np.array_equal(np.frombuffer(source[i], dtype="<u2"), records["train"][i])


@pytest.mark.slow
def test_rerun_skips_an_identical_dataset_and_refuses_another(sample_run, sample_dir, capsys):
    out, manifest, _, _ = sample_run
    before = tree_digest(out)
    assert pretokenize.run(["--input", str(sample_dir / "*.parquet"), "--output", str(out), IN_MEMORY]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert tree_digest(out) == before
    # Other options make another dataset: refused without --overwrite, nothing touched.
    assert pretokenize.run(["--input", str(sample_dir / "*.parquet"), "--output", str(out), "--split", "70,20,10", IN_MEMORY]) == 2
    assert "different dataset" in capsys.readouterr().err
    assert tree_digest(out) == before


@pytest.mark.slow
def test_deterministic_across_modes_and_overwrite(tmp_path, sample_run, sample_dir):
    out, _, _, _ = sample_run
    other = tmp_path / "multi"
    # The DirectRunner's multi-process mode on all cores (the default for larger inputs, one_process_rows).
    multi = "--direct_running_mode=multi_processing"
    assert pretokenize.run(["--input", str(sample_dir / "*.parquet"), "--output", str(other), multi]) == 0
    assert tree_digest(other) == tree_digest(out)
    # --overwrite replaces a different dataset, and going back gives the same bytes again.
    assert pretokenize.run(["--input", str(sample_dir / "*.parquet"), "--output", str(other), "--split", "50,25,25", "--overwrite", IN_MEMORY]) == 0
    assert load_manifest(other)["options"]["split"] == [0.5, 0.25, 0.25]
    assert pretokenize.run(["--input", str(sample_dir / "*.parquet"), "--output", str(other), "--overwrite", IN_MEMORY]) == 0
    assert tree_digest(other) == tree_digest(out)


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory):
    """Seed-like data over several buckets: 60k rows, small row groups, four shards."""
    d = tmp_path_factory.mktemp("mixed")
    write_shards(synth.generate(60_000, seed=7), str(d), shards=3, row_group_size=5_000)
    return d


@pytest.mark.slow
def test_seed_like_data_over_many_buckets(tmp_path, mixed_input):
    out = tmp_path / "out"
    assert pretokenize.run(["--input", str(mixed_input), "--output", str(out), "--bucket_rows", "15000", IN_MEMORY]) == 0
    manifest = load_manifest(out)
    assert manifest["options"]["num_buckets"] == 4
    records = np.concatenate([read_split(out, manifest, s) for s in SPLITS])
    assert pad_fraction(records) <= 0.01
    for s in SPLITS:
        assert len(manifest["splits"][s]["files"]) >= 1
        assert manifest["splits"][s]["context_continuity"] >= 0.8
    decoded = decoded_records(read_split(out, manifest, "train"))
    _check_grouping(decoded)


def test_all_ipv4_data_is_near_its_floor(tmp_path):
    table = synth.generate(40_000, seed=3)
    table = table.filter(pa.compute.equal(table["ip_version"], 4))
    pq.write_table(table, tmp_path / "v4.parquet", row_group_size=10_000)
    out = tmp_path / "out"
    assert pretokenize.run(["--input", str(tmp_path / "v4.parquet"), "--output", str(out), IN_MEMORY]) == 0
    manifest = load_manifest(out)
    records = np.concatenate([read_split(out, manifest, s) for s in SPLITS])
    assert pad_fraction(records) <= 34 / 1024 + 0.005


@pytest.mark.slow
def test_time_split_puts_train_first(tmp_path, mixed_input):
    out = tmp_path / "out"
    assert pretokenize.run(["--input", str(mixed_input), "--output", str(out), "--split_by", "time", IN_MEMORY]) == 0
    manifest = load_manifest(out)
    times = {}
    for s in SPLITS:
        decoded = decoded_records(read_split(out, manifest, s))
        times[s] = [m["event_time_s"] for rec in decoded for m in rec]
        _check_grouping(decoded)
    assert max(times["train"]) < min(times["val"]) and max(times["val"]) < min(times["test"])
    total = sum(len(t) for t in times.values())
    assert len(times["train"]) / total == pytest.approx(0.8, abs=0.02)
    assert manifest["options"]["split_by"] == "time" and len(manifest["options"]["time_cut_points"]) == 2


def test_row_groups_of_one_file_are_read_as_tasks_of_consecutive_row_groups(tmp_path):
    from beam_pipelines.common.parquet import plan_tasks, resolve_inputs

    pq.write_table(synth.generate(10_000, seed=1), tmp_path / "one.parquet", row_group_size=1_000)
    files = resolve_inputs(str(tmp_path / "one.parquet"))
    (task,) = plan_tasks(files)  # fewer rows than the smallest task target: one task
    assert [(p.row_groups, p.row_offset, p.rows) for p in task.pieces] == [(tuple(range(10)), 0, 10_000)]
    tasks = plan_tasks(files, target_rows=2_500)
    assert [[(p.row_groups, p.row_offset) for p in t.pieces] for t in tasks] == [
        [((0, 1, 2), 0)], [((3, 4, 5), 3_000)], [((6, 7, 8), 6_000)], [((9,), 9_000)]
    ]


def test_type_variants_and_extra_columns(tmp_path):
    """float32 rtt and size, other timestamp units and zones, other column order, extra columns."""
    base = synth.generate(5_000, seed=5)
    variant = pa.table(
        {
            "note": pa.array(["x"] * base.num_rows),
            "size": base["size"].cast(pa.float32()),
            "rtt": base["rtt"].cast(pa.float32()),
            "event_time": base["event_time"].cast(pa.timestamp("ms"), safe=False),
            "packet_error_count": base["packet_error_count"].cast(pa.int16()),
            "ip_version": base["ip_version"].cast(pa.int8()),
            "dst_addr": base["dst_addr"],
            "src_addr": base["src_addr"],
            "msm_id": base["msm_id"].cast(pa.int32()),
        }
    )
    pq.write_table(variant, tmp_path / "variant.parquet")
    out = tmp_path / "out"
    assert pretokenize.run(["--input", str(tmp_path / "variant.parquet"), "--output", str(out), IN_MEMORY]) == 0
    manifest = load_manifest(out)
    got = sorted(m["rtt"] for s in SPLITS for rec in decoded_records(read_split(out, manifest, s)) for m in rec)
    rejected = manifest["rejected"]["total"]
    assert len(got) + rejected == base.num_rows
    assert all(float(np.float32(r)) == r for r in got)  # float32 RTTs widened exactly


@pytest.mark.slow
@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_scratch_compression_does_not_change_the_output(tmp_path, sample_run, sample_dir, codec):
    out, _, _, _ = sample_run
    other = tmp_path / codec
    assert pretokenize.run(["--input", str(sample_dir), "--output", str(other), "--tmp_compression", codec, IN_MEMORY]) == 0
    assert tree_digest(other) == tree_digest(out)
