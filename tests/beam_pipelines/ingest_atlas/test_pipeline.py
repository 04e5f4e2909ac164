"""python -m beam_pipelines.ingest_atlas end to end on small inputs: outputs, determinism, failures."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import socket

import orjson
import pyarrow.parquet as pq
import pytest

from beam_pipelines.common.options import beam_options
from beam_pipelines.ingest_atlas import convert as atlas
from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from tests.beam_pipelines.ingest_atlas.helpers import IN_MEMORY, load_manifest, read_rejected, read_rows, tree_bytes


def ingest(src, out, *extra) -> int:
    return ingest_atlas.run(["--input", str(src / "*"), "--output", str(out), *extra])


def test_small_inputs_end_to_end(small_inputs, real_lines, tmp_path, capsys):
    src, expected = small_inputs
    out = tmp_path / "out"
    assert ingest(src, out, IN_MEMORY) == 0
    summary = capsys.readouterr().out
    assert "skipped       2 non-ping result(s): dns 1, traceroute 1" in summary
    assert "rejected      2 line(s): invalid_json 1, missing_size 1" in summary

    assert sorted(os.listdir(out)) == ["_SUCCESS", "manifest.json", "part-00000-of-00001.parquet", "rejected"]
    manifest = load_manifest(out)
    totals = manifest["totals"]
    assert totals["lines"] == expected["lines"] and totals["records"] == expected["records"]
    assert totals["blank_lines"] == 1
    assert manifest["skipped"] == {"total": 2, "by_type": expected["skipped"]}
    assert manifest["rejected"]["by_reason"] == {"invalid_json": 1, "missing_size": 1}
    assert totals["records"] == totals["converted"] + totals["skipped"] + totals["rejected"]
    assert [i["compression"] for i in manifest["inputs"]] == ["bz2", None, "gzip", None]  # a, b, c, d: sorted

    rows = read_rows(out)
    assert rows.schema.equals(atlas.ROW_SCHEMA)
    assert rows.num_rows == totals["rows"] == len(real_lines) - 1  # the fw 0 line has no size
    # In file order (a.jsonl.bz2, b.json, c.jsonl.gz, d.jsonl), then line order.
    order = [*range(0, 150), *range(200, 230), *range(150, 200), *range(230, len(real_lines))]
    want = [orjson.loads(real_lines[i]) for i in order]
    want = [w for w in want if "size" in w]
    assert rows.column("prb_id").to_pylist() == [w["prb_id"] for w in want]
    assert rows.column("event_time").cast("int64").to_pylist() == [w["timestamp"] * 1_000_000 for w in want]

    rejected = read_rejected(out).to_pylist()
    fw0 = next(i for i, line in enumerate(real_lines) if b'"fw":0,' in line)
    assert fw0 >= 230  # in d.jsonl
    assert [(os.path.basename(r["file"]), r["line_number"], r["reason"]) for r in rejected] == [
        ("a.jsonl.bz2", 103, "invalid_json"),
        ("d.jsonl", fw0 - 230 + 1, "missing_size"),
    ]
    assert rejected[0]["raw_line"] == "{not json"
    assert rejected[1]["raw_line"].encode() == real_lines[fw0]
    assert not os.path.exists(out / "_tmp_ingest")
    assert json.loads((out / "_SUCCESS").read_text())["fingerprint"] == manifest["fingerprint"]


def test_rtt_modes_on_small_inputs(small_inputs, tmp_path):
    src, _ = small_inputs
    counts = {}
    for mode in ("min", "avg", "each"):
        assert ingest(src, tmp_path / mode, IN_MEMORY, "--rtt", mode) == 0
        counts[mode] = read_rows(tmp_path / mode)
    assert counts["min"].num_rows == counts["avg"].num_rows
    mins, avgs = counts["min"].column("rtt").to_pylist(), counts["avg"].column("rtt").to_pylist()
    assert all(a >= m for a, m in zip(avgs, mins)) and any(a > m for a, m in zip(avgs, mins))
    each = counts["each"]
    assert each.num_rows > counts["min"].num_rows
    assert set(each.column("packet_error_count").to_pylist()) == {0, 1}
    assert load_manifest(tmp_path / "each")["options"]["rtt"] == "each"


@pytest.mark.slow
def test_same_bytes_whatever_the_runner_mode_or_split(small_inputs, tmp_path):
    """Default (multi-process, all cores) with ranges vs in-memory without: byte-identical outputs."""
    src, _ = small_inputs
    a, b = tmp_path / "a", tmp_path / "b"
    assert ingest(src, a, IN_MEMORY, "--shard_rows", "100") == 0
    assert ingest(src, b, "--shard_rows", "100", "--split_bytes", "2000") == 0  # the default runner mode
    assert len(load_manifest(a)["shards"]) == 4
    assert tree_bytes(a) == tree_bytes(b)


@pytest.mark.slow
def test_dask_runner_same_bytes(small_inputs, tmp_path):
    distributed = pytest.importorskip("distributed")
    src, _ = small_inputs
    a, b = tmp_path / "a", tmp_path / "b"
    assert ingest(src, a, IN_MEMORY, "--shard_rows", "100") == 0
    # No --dask_client_address: the runner starts a local cluster, which must not outlive the job.
    assert ingest(src, b, "--runner=DaskRunner", "--shard_rows", "100", "--split_bytes", "2000") == 0
    assert tree_bytes(a) == tree_bytes(b)
    with pytest.raises(ValueError, match="No clients found"):
        distributed.default_client()


def test_input_matching_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert ingest_atlas.run(["--input", str(tmp_path / "*.bz2"), "--output", str(out), IN_MEMORY]) == 2
    assert "matches no file" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "name, data, kind",
    [
        ("cut.jsonl.gz", gzip.compress(b'{"type":"ping"}\n' * 5000)[:-30], "gzip"),
        ("bad.bz2", bz2.compress(b'{"type":"ping"}\n' * 5000)[:40] + b"\x00" * 400, "bz2"),
    ],
)
def test_corrupt_compressed_file(tmp_path, capsys, name, data, kind):
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.jsonl").write_text('{"type":"dns"}\n')
    (src / name).write_bytes(data)
    out = tmp_path / "out"
    assert ingest(src, out, IN_MEMORY) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{src / name}: cannot read {kind} stream" in errors[0], err
    assert "[while running" not in err and "Traceback" not in err
    assert not (out / "_SUCCESS").exists() and not (out / "manifest.json").exists()
    # Only Beam's log stays (its path is printed), with the traceback; no lock, no fragments.
    log = out / "_tmp_ingest" / "pipeline.log"
    assert f"Beam's log, with the workers' tracebacks: {log}" in err
    assert "Traceback (most recent call last)" in log.read_text()
    assert os.listdir(out) == ["_tmp_ingest"] and os.listdir(out / "_tmp_ingest") == ["pipeline.log"]


def test_not_really_gzip(tmp_path, capsys):
    (tmp_path / "x.gz").write_text('{"type":"ping"}\n')
    assert ingest_atlas.run(["--input", str(tmp_path / "x.gz"), "--output", str(tmp_path / "o"), IN_MEMORY]) == 2
    assert "x.gz: named like a gzip file but is not one" in capsys.readouterr().err


def test_complete_output_is_refused_then_overwritten(small_inputs, tmp_path, capsys):
    src, _ = small_inputs
    out = tmp_path / "out"
    assert ingest(src, out, IN_MEMORY, "--shard_rows", "50") == 0
    assert len([n for n in os.listdir(out) if n.startswith("part-")]) == 7  # 335 rows
    assert ingest(src, out, IN_MEMORY) == 2
    assert "already holds a complete ingest result; pass --overwrite" in capsys.readouterr().err
    assert ingest(src, out, IN_MEMORY, "--overwrite") == 0
    assert sorted(n for n in os.listdir(out) if n.endswith(".parquet")) == ["part-00000-of-00001.parquet"]
    assert pq.read_metadata(out / "part-00000-of-00001.parquet").num_rows == load_manifest(out)["totals"]["rows"]


def test_partial_output_is_cleared_and_foreign_files_refused(small_inputs, tmp_path, capsys):
    src, _ = small_inputs
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00007-of-00009.parquet").write_text("left by a crashed run")
    assert ingest(src, out, IN_MEMORY) == 0
    assert not (out / "part-00007-of-00009.parquet").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert ingest(src, other, IN_MEMORY) == 2
    assert "holds files this job did not write" in capsys.readouterr().err


def test_output_locked_by_a_live_writer_is_refused_untouched(small_inputs, tmp_path, capsys):
    src, _ = small_inputs
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000-of-00002.parquet").write_text("the other run's")
    lock = json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "started": "2026-01-01T00:00:00+00:00"})
    (out / "_writer.lock").write_text(lock)
    assert ingest(src, out, IN_MEMORY, "--overwrite") == 2
    assert f"{out} is being written by another run" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["_writer.lock", "part-00000-of-00002.parquet"]
    assert (out / "part-00000-of-00002.parquet").read_text() == "the other run's"


def test_bad_options(tmp_path, capsys):
    assert ingest_atlas.run(["--input", "x", "--output", str(tmp_path), "--rtt", "max"]) == 2
    assert ingest_atlas.run(["--input", "x", "--output", str(tmp_path), "--shard_rows", "0"]) == 2
    assert ingest_atlas.run(["--output", str(tmp_path)]) == 2


def test_beam_options_defaults():
    view = beam_options([]).get_all_options()
    assert view["direct_running_mode"] == "multi_processing" and view["direct_num_workers"] == 0
    view = beam_options([IN_MEMORY]).get_all_options()
    assert view["direct_running_mode"] == "in_memory"
    view = beam_options(["--runner=DaskRunner"]).get_all_options()
    assert view["runner"].endswith("dask_runner.DaskRunner") and view["direct_running_mode"] != "multi_processing"
