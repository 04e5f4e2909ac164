"""The seed-like sample generator (beam_pipelines.make_sample.synth) and its CLI (beam_pipelines.make_sample)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_pipelines.make_sample import shards as make_sample

from beam_pipelines.make_sample import synth
from tests.tokenizer.geography import held_out_errors
from tokenizer.table import encode_table

EXPECTED_SCHEMA = pa.schema(
    [
        ("msm_id", pa.int64()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("src_addr", pa.string()),
        ("dst_addr", pa.string()),
        ("ip_version", pa.int64()),
        ("rtt", pa.float64()),
        ("size", pa.int64()),
        ("packet_error_count", pa.int64()),
    ]
)
SHARD_NAMES = [f"part-{i:05d}-of-00004.parquet" for i in range(4)]


@pytest.fixture(scope="module")
def sample(sample_dir) -> pa.Table:
    return pq.read_table(sample_dir)


def test_bundled_sample_schema_exactly(sample_dir, sample):
    assert sorted(os.listdir(sample_dir)) == SHARD_NAMES
    for name in SHARD_NAMES:
        schema = pq.read_schema(sample_dir / name)
        assert schema.names == EXPECTED_SCHEMA.names
        assert [f.type for f in schema] == [f.type for f in EXPECTED_SCHEMA]
    assert sample.schema.types == EXPECTED_SCHEMA.types
    assert sample.column("event_time").type.tz == "UTC" and sample.column("event_time").type.unit == "us"
    assert synth.SCHEMA.equals(EXPECTED_SCHEMA)


def test_bundled_sample_is_small(sample_dir):
    total = sum(p.stat().st_size for p in sample_dir.iterdir())
    assert total < 5_000_000


def test_bundled_sample_is_what_the_cli_writes(sample_dir, tmp_path, capsys):
    out = tmp_path / "sample"
    assert make_sample.run(["--rows", "120000", "--shards", "4", "--seed", "0", "--output", str(out)]) == 0
    assert "120,000 rows" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == SHARD_NAMES  # no temporary files left behind
    for name in SHARD_NAMES:
        fresh = pq.read_table(out / name)
        bundled = pq.read_table(sample_dir / name)
        assert fresh.num_rows == bundled.num_rows == 30_000
        assert fresh.equals(bundled), name


def test_deterministic_for_a_seed(tmp_path):
    args = ["--rows", "5000", "--shards", "3", "--seed", "7"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert make_sample.run([*args, "--output", str(a)]) == 0
    assert make_sample.run([*args, "--output", str(b)]) == 0
    assert make_sample.run(["--rows", "5000", "--shards", "3", "--seed", "8", "--output", str(c)]) == 0
    names = sorted(os.listdir(a))
    assert names == [f"part-{i:05d}-of-00003.parquet" for i in range(3)] == sorted(os.listdir(b))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes()  # byte-identical files
        assert (a / name).read_bytes() != (c / name).read_bytes()  # another seed, other data
    rows = [pq.read_metadata(a / n).num_rows for n in names]
    assert rows == [1666, 1667, 1667] and sum(rows) == 5000
    assert synth.generate(1000, seed=7).equals(synth.generate(1000, seed=7))


@pytest.mark.parametrize("rows,seed,chunk,pool_block", [(5_000, 7, 333, 500), (20_000, 3, 4_096, 1_000),
                                                         (7, 1, 2, 4), (3_001, 0, 10_000, 1 << 20)])
def test_streamed_rows_equal_the_in_memory_ones(tmp_path, rows, seed, chunk, pool_block):
    # Pieces far smaller than the data (many probe blocks, row pieces and time buckets), taken in uneven sizes.
    stream = synth.RowStream(rows, seed, str(tmp_path), chunk_rows=chunk, pool_block=pool_block)
    sizes, left = [], rows
    for n in [1, 2, 997, 13, 5_000, 31] * 100:
        if left == 0:
            break
        sizes.append(min(n, left))
        left -= sizes[-1]
    streamed = pa.concat_tables([stream.take(n) for n in sizes])
    assert streamed.equals(synth.generate(rows, seed))
    assert os.listdir(tmp_path) == []  # every spill file is read, then removed
    with pytest.raises(ValueError, match="take"):
        stream.take(1)  # nothing left


def test_cli_shards_are_byte_identical_to_the_in_memory_ones(tmp_path):
    # The CLI streams; write_shards on generate's table is the in-memory reference (several pieces per shard).
    paths = make_sample.write_stream(30_000, 4, str(tmp_path / "streamed"), 3, row_group_size=1_000, chunk_rows=2_500)
    want = make_sample.write_shards(synth.generate(30_000, 4), str(tmp_path / "memory"), 3, row_group_size=1_000)
    assert [os.path.basename(p) for p in paths] == [os.path.basename(p) for p in want]
    for a, b in zip(paths, want):
        assert open(a, "rb").read() == open(b, "rb").read()
        assert pq.read_metadata(a).num_row_groups == 10
    assert sorted(os.listdir(tmp_path / "streamed")) == [os.path.basename(p) for p in paths]  # no scratch left


@pytest.mark.parametrize(
    "argv",
    [
        ["--shards", "0"],
        ["--rows", "0"],
        ["--rows", "-5"],
        ["--rows", "3", "--shards", "4"],
        ["--rows", "many"],
        ["--no-such-flag"],
        ["--row_group_size", "0"],
        ["--rows", str(1 << 31)],
    ],
)
def test_bad_arguments_exit_non_zero(argv, tmp_path, capsys):
    assert make_sample.run([*argv, "--output", str(tmp_path / "out")]) == 2  # bad options
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_is_a_bad_option(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert make_sample.run(["--rows", "10", "--shards", "1", "--output", str(tmp_path / "f")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert (tmp_path / "f").read_text() == "x"


def test_a_shard_that_cannot_be_written_fails_the_run(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000-of-00001.parquet.tmp").mkdir()  # the temporary name is taken by a folder
    assert make_sample.run(["--rows", "10", "--shards", "1", "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: make_sample failed: cannot write {out}: ") and "Traceback" not in err
    assert not (out / "part-00000-of-00001.parquet").exists()


def test_cli_module_exit_status(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.make_sample", "--shards", "0", "--output", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "shards" in bad.stderr
    good = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.make_sample", "--rows", "50", "--shards", "2",
         "--output", str(tmp_path / "y")],
        capture_output=True, text=True, timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert pq.read_table(tmp_path / "y").num_rows == 50


# --- the sample looks like the seed's data -------------------------------------------------------


def share(mask) -> float:
    return pc.mean(pc.cast(mask, pa.float64())).as_py()


def test_family_shares(sample):
    v4 = share(pc.equal(sample["ip_version"], 4))
    v6 = share(pc.equal(sample["ip_version"], 6))
    assert 0.55 < v4 < 0.61 and abs(v4 + v6 - 1) < 1e-12
    # The text of the addresses agrees with the family on clean rows.
    rows = sample.slice(0, 2000).to_pylist()
    for r in rows:
        for a in (r["src_addr"], r["dst_addr"]):
            try:
                parsed = ipaddress.ip_address(a)
            except (ValueError, TypeError):
                continue
            assert parsed.version == r["ip_version"]


def test_failures_sizes_and_errors(sample):
    failed = share(pc.equal(sample["rtt"], -1.0))
    assert 0.005 < failed < 0.05
    rtt = sample["rtt"].to_numpy()
    ok = rtt[rtt != -1.0]
    assert ok.min() > 0 and np.all(np.isfinite(ok)) and 5 < np.median(ok) < 500
    assert share(pc.equal(sample["size"], 64)) > 0.85
    assert share(pc.equal(sample["packet_error_count"], 0)) > 0.9
    sizes = sample["size"].to_numpy()
    errors = sample["packet_error_count"].to_numpy()
    assert sizes.min() >= 0 and sizes.max() <= 65535 and errors.min() >= 0 and errors.max() <= 255


def test_timestamps_within_28_days(sample):
    t = sample["event_time"]
    lo, hi = pc.min_max(t).values()
    start = dt.datetime(2025, 6, 24, tzinfo=dt.timezone.utc)
    assert start <= lo.as_py() and hi.as_py() < start + dt.timedelta(days=28)
    assert hi.as_py() - lo.as_py() > dt.timedelta(days=27)  # it really spans the four weeks
    us = t.cast(pa.int64()).to_numpy()
    assert np.all(np.diff(us) >= 0)  # sorted by event time, across shards too


def test_small_share_of_dirty_rows(sample):
    enc = encode_table(sample)
    rejected = len(enc.rejected) / sample.num_rows
    assert 0.001 < rejected < 0.01
    assert set(enc.reason_counts()) <= {"empty_src_addr", "null_dst_addr", "malformed_src_addr"}
    assert len(enc.reason_counts()) == 3


def test_sources_have_hundreds_of_measurements(sample):
    enc = encode_table(sample)
    src = pc.take(sample["src_addr"], pa.array(enc.accepted))
    counts = np.asarray(src.value_counts().field("counts"))
    assert 100 < len(counts) < 5000
    assert np.median(counts) >= 100
    assert counts.max() >= 200
    # Measurement ids are shared by many probes.
    per_msm = np.asarray(sample["msm_id"].value_counts().field("counts"))
    assert np.median(per_msm) >= 100


def test_geography_makes_destinations_and_source_prefixes_informative(sample):
    """As in the real RIPE Atlas results (README, "The bundled sample"): for sources never seen, the
    destination's median RTT is far better than the global median, and a source's /8 adds to it."""
    errors = held_out_errors(sample)
    assert errors["dst"] < 0.75 * errors["global"]
    assert errors["src8_dst"] < 0.9 * errors["dst"]


def test_addresses_come_from_their_regions_space():
    table = synth.generate(20_000, seed=5)
    regions = {octet: i for i, r in enumerate(synth.REGIONS) for octet in r.ipv4_first_octets}
    prefixes = {p: i for i, r in enumerate(synth.REGIONS) for p in r.ipv6_prefixes}
    private = 0
    for column in ("src_addr", "dst_addr"):
        values = [a for a in table[column].to_pylist() if a and a != "not-an-address"]  # clean rows
        assert len(values) > 19_000
        for a in values:
            if ":" in a:
                assert ":".join(a.split(":")[:2]) in prefixes, a
            elif a.startswith("192.168."):
                private += column == "src_addr"
            else:
                assert int(a.split(".")[0]) in regions, a
    assert 0 < private < 0.2 * len(table)  # only probes sit behind NAT
    # Each region's IPv4 space is its own: no first octet is allocated twice, none is reserved.
    octets = [o for r in synth.REGIONS for o in r.ipv4_first_octets]
    assert len(octets) == len(set(octets)) and not set(octets) & {0, 10, 127, 169, 172, 192, 224}
