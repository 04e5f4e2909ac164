"""``ingest_atlas --append``: new files become a new version; old shards never change; re-append is a no-op;
a crash anywhere leaves the previous version and the rerun completes; two writers; every refusal.

Inputs are real RIPE Atlas results (the ``real_lines`` fixture), in two rounds of files; round 2's files
hold results of the same probes and one of them sorts between round 1's files.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from beam_pipelines.ingest_atlas import append, discovery, shards
from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from tests.beam_pipelines.ingest_atlas.helpers import IN_MEMORY, load_manifest, tree_bytes
from tests.data_files import REPO_ROOT

EPOCH = "1764496800"  # 2025-11-30T10:00:00Z
CREATED = "2025-11-30T10:00:00Z"


def _round1(folder, lines) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "a.jsonl.bz2").write_bytes(bz2.compress(b"\n".join([*lines[:100], b"{not json"]) + b"\n"))
    (folder / "c.json").write_text(json.dumps([json.loads(x) for x in lines[100:140]]))


def _round2(folder, lines) -> None:
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines[140:220]) + b"\n"))
    (folder / "d.jsonl").write_bytes(b"\n".join(lines[220:]) + b"\n")  # holds the fw 0 line (missing_size)


def _append(src, out, *extra) -> int:
    return ingest_atlas.run(["--input", str(src), "--output", str(out), "--append", IN_MEMORY, *extra])


def _rows(out, manifest) -> list[str]:
    """Every row of every listed shard, as canonical JSON, sorted: a multiset."""
    rows = []
    for shard in manifest["shards"]:
        rows.extend(pq.read_table(os.path.join(out, shard["path"])).to_pylist())
    return sorted(json.dumps(r, default=str, sort_keys=True) for r in rows)


def _rejected(out, manifest) -> list[tuple]:
    found = []
    for f in manifest["rejected_files"]:
        t = pq.read_table(os.path.join(out, f["path"]))
        found.extend((os.path.basename(r["file"]), r["line_number"], r["reason"]) for r in t.to_pylist())
    return sorted(found)


@pytest.fixture()
def epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)


@pytest.fixture()
def two_rounds(tmp_path, real_lines, epoch):
    """incoming/ with round 1, a --append into pq/ (version 1), then round 2 added.
    Returns (incoming, pq, tree of pq at version 1)."""
    src, out = tmp_path / "incoming", tmp_path / "pq"
    _round1(src, real_lines)
    assert _append(src, out) == 0
    v1 = tree_bytes(out)
    _round2(src, real_lines)
    return src, out, v1


@pytest.mark.slow
def test_append_adds_a_version_with_every_result_once(two_rounds, tmp_path, capsys):
    src, out, v1 = two_rounds
    clean = tmp_path / "clean"  # a plain ingest of all four files
    assert ingest_atlas.run(["--input", str(src), "--output", str(clean), IN_MEMORY]) == 0
    capsys.readouterr()
    assert _append(src, out) == 0
    captured = capsys.readouterr()
    assert "2 input file(s) converted before (version 1), skipped" in captured.err
    assert "version       2 of " in captured.out
    m, ref = load_manifest(out), load_manifest(clean)
    after = tree_bytes(out)

    # Version 1's files: same names, same bytes, still listed first.
    v1_manifest = json.loads(v1["manifest.json"])
    for name, data in v1.items():
        if name not in ("manifest.json", "_SUCCESS"):
            assert after[name] == data, name
    assert m["shards"][: len(v1_manifest["shards"])] == v1_manifest["shards"]
    new_files = sorted(set(after) - set(v1))
    assert new_files == ["part-v00002-00000-of-00001.parquet", "rejected/rejected-v00002-00000-of-00001.parquet"]

    # Versions: number, own inputs, shards, counts, created; top level = totals over both.
    assert m["version"] == 2 and [v["version"] for v in m["versions"]] == [1, 2]
    first, second = m["versions"]
    assert [os.path.basename(i["path"]) for i in first["inputs"]] == ["a.jsonl.bz2", "c.json"]
    assert [os.path.basename(i["path"]) for i in second["inputs"]] == ["b.jsonl.gz", "d.jsonl"]
    assert first["created"] == second["created"] == CREATED
    assert second["fingerprint"] == m["fingerprint"] != first["fingerprint"] == v1_manifest["fingerprint"]
    assert first["rejected"]["by_reason"] == {"invalid_json": 1} and second["rejected"]["by_reason"] == {"missing_size": 1}
    assert [s["path"] for s in second["shards"]] == ["part-v00002-00000-of-00001.parquet"]
    for key in ("rows", "records", "converted", "rejected", "lines"):
        assert m["totals"][key] == first["totals"][key] + second["totals"][key] == ref["totals"][key], key
    assert m["rejected"] == ref["rejected"] and m["skipped"] == ref["skipped"]
    assert sorted(i["sha256"] for i in m["inputs"]) == sorted(i["sha256"] for i in ref["inputs"])
    assert json.loads(after["_SUCCESS"])["fingerprint"] == m["fingerprint"]

    # Record level: every result of every file exactly once across the two versions' shards, and every
    # rejected line once, as in a clean ingest of all four files.
    assert _rows(out, m) == _rows(clean, ref) and len(_rows(out, m)) == ref["totals"]["rows"]
    assert _rejected(out, m) == _rejected(clean, ref)

    # Re-append: nothing to do, nothing changes (byte for byte), nothing is even rewritten.
    stamps = {n: os.stat(out / n).st_mtime_ns for n in ("manifest.json", "_SUCCESS")}
    assert _append(src, out) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert tree_bytes(out) == after
    assert stamps == {n: os.stat(out / n).st_mtime_ns for n in ("manifest.json", "_SUCCESS")}


@pytest.mark.slow
def test_refusals_leave_the_output_untouched(two_rounds, tmp_path, capsys):
    src, out, v1 = two_rounds
    # A converted file changed (same size, other bytes; then another size): refused, naming it.
    a = src / "a.jsonl.bz2"
    original = a.read_bytes()
    a.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert _append(src, out) == 2
    err = capsys.readouterr().err
    assert f"{a}: changed after it was converted (version 1: {len(original):,} bytes, sha256 " in err
    a.write_bytes(original + b"\n")
    assert _append(src, out) == 2
    assert f"now {len(original) + 1:,} bytes)" in capsys.readouterr().err
    a.write_bytes(original)
    assert tree_bytes(out) == v1

    # A shaping option that differs from the output's, both values named.
    assert _append(src, out, "--rtt", "avg") == 2
    assert "--rtt avg differs from the output's --rtt min" in capsys.readouterr().err
    # --append with --overwrite.
    assert _append(src, out, "--overwrite") == 2
    assert "--append and --overwrite cannot be combined" in capsys.readouterr().err
    # Somebody else's file in the output.
    (out / "notes.txt").write_text("mine")
    assert _append(src, out) == 2
    assert "holds files this job did not write (['notes.txt'])" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    # A second writer holds the lock (a live process: our parent).
    lock = {"host": socket.gethostname(), "pid": os.getppid(), "started": "2026-01-01T00:00:00+00:00"}
    (out / "_writer.lock").write_text(json.dumps(lock))
    assert _append(src, out) == 2
    assert "is being written by another run" in capsys.readouterr().err
    (out / "_writer.lock").unlink()
    assert tree_bytes(out) == v1
    # The same content under another path was converted already: skipped, nothing to do.
    other = tmp_path / "moved"
    other.mkdir()
    (other / "a-copy.bz2").write_bytes(original)
    assert _append(other, out) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert tree_bytes(out) == v1


@pytest.mark.slow
def test_append_to_a_plain_output(small_inputs, tmp_path, epoch):
    """An output of a plain run (no versions recorded) is version 1 (created null); appending works."""
    src, _ = small_inputs
    out = tmp_path / "out"
    names = sorted(os.listdir(src))
    first = tmp_path / "first"
    first.mkdir()
    for name in names[:2]:
        os.link(src / name, first / name)
    assert ingest_atlas.run(["--input", str(first), "--output", str(out), IN_MEMORY]) == 0
    plain = load_manifest(out)
    assert "versions" not in plain and all(len(i["sha256"]) == 64 for i in plain["inputs"])
    assert _append(src, out) == 0
    m = load_manifest(out)
    assert [(v["version"], v["created"]) for v in m["versions"]] == [(1, None), (2, CREATED)]
    assert m["versions"][0]["shards"] == plain["shards"] and m["versions"][0]["fingerprint"] == plain["fingerprint"]
    assert [os.path.basename(i["path"]) for i in m["versions"][1]["inputs"]] == names[2:]


@pytest.mark.slow
def test_a_failed_append_leaves_the_previous_version(two_rounds, capsys):
    """A corrupt new dump: exit 1, the new version's files removed, version 1 as it was (only Beam's log
    is left, in the scratch folder); once the file is replaced, the rerun appends."""
    src, out, v1 = two_rounds
    bad = src / "e.jsonl.bz2"
    bad.write_bytes(bz2.compress(b'{"type":"ping"}\n' * 5000)[:40] + b"\x00" * 400)
    assert _append(src, out) == 1
    err = capsys.readouterr().err
    assert f"{bad}: cannot read bz2 stream" in err
    assert f"{out} still holds version 1, complete; run the same command again to append" in err
    left = tree_bytes(out)
    assert {k: v for k, v in left.items() if not k.startswith("_tmp_ingest/")} == v1
    assert [k for k in left if k.startswith("_tmp_ingest/")] == ["_tmp_ingest/pipeline.log"]
    bad.unlink()
    assert _append(src, out) == 0
    assert load_manifest(out)["version"] == 2 and not (out / "_tmp_ingest").exists()


def _interrupted(when: str, target: str, argv: list[str], **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.beam_pipelines.ingest_atlas.interrupt", when, target,
           "beam_pipelines.ingest_atlas.pipeline", "--", *argv]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.slow
@pytest.mark.parametrize(
    "when, target",
    [
        # A new shard written, unlisted (killed before the manifest: the same state, more files).
        ("after", "beam_pipelines.ingest_atlas.shards:write_shard"),
        ("before", "beam_pipelines.common.storage:write_json:_SUCCESS"),  # the new manifest written
    ],
    ids=["shard", "success"],
)
def test_sigkill_during_an_append_then_rerun_equals_a_clean_append(two_rounds, tmp_path, when, target):
    src, out, v1 = two_rounds
    reference = tmp_path / "reference"  # a clean append of round 2 onto a copy of version 1
    for name, data in v1.items():
        (reference / name).parent.mkdir(parents=True, exist_ok=True)
        (reference / name).write_bytes(data)
    assert _append(src, reference) == 0

    proc = _interrupted(when, target, ["--input", str(src), "--output", str(out), "--append", IN_MEMORY])
    proc.communicate(timeout=120)
    assert proc.returncode == -9  # SIGKILL
    left = tree_bytes(out)
    m = json.loads(left["manifest.json"])
    if "_SUCCESS" in target:  # the new version is complete; only _SUCCESS is stale
        assert m["version"] == 2 and json.loads(left["_SUCCESS"])["fingerprint"] != m["fingerprint"]
    else:  # still version 1, byte for byte, in every listed file
        assert left["manifest.json"] == v1["manifest.json"] and left["_SUCCESS"] == v1["_SUCCESS"]
        assert all(left[name] == data for name, data in v1.items())
        assert any(name.startswith("part-v00002") for name in left)  # what the killed run left, unlisted
    assert "_writer.lock" in left  # its owner is dead: the rerun takes it over

    assert _append(src, out) == 0
    assert tree_bytes(out) == tree_bytes(reference)


@pytest.mark.slow
def test_two_appends_at_once_one_is_refused(two_rounds, tmp_path, capsys):
    src, out, _ = two_rounds
    gate = tmp_path / "go"
    argv = ["--input", str(src), "--output", str(out), "--append", IN_MEMORY]
    proc = _interrupted(f"pause:{gate}", "beam_pipelines.common.storage:write_json:manifest.json", argv)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(f"{gate}.waiting"):  # the first append holds the lock, its shards written
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert _append(src, out) == 2
        assert f"{out} is being written by another run (pid {proc.pid}" in capsys.readouterr().err
        gate.touch()
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0
    m = load_manifest(out)
    assert m["version"] == 2 and len(m["inputs"]) == 4
    assert not (out / "_writer.lock").exists()


# --- without Beam ------------------------------------------------------------------------------------


def test_shard_names_of_versions():
    assert shards.shard_path("rows", 0, 1) == "part-00000-of-00001.parquet"
    assert shards.shard_path("rows", 3, 12, version=7) == "part-v00007-00003-of-00012.parquet"
    assert shards.shard_path("rejected", 0, 1, version=2) == "rejected/rejected-v00002-00000-of-00001.parquet"
    assert shards.is_shard_name("part-v00007-00003-of-00012.parquet") and shards.is_shard_name("part-00000-of-00001.parquet")
    assert not shards.is_shard_name("part-v7-00003-of-00012.parquet")
    names = [shards.shard_path("rows", 0, 2, v) for v in (10, 2, 1)]
    assert sorted(names) == names[::-1]  # versions in order in a sorted listing (a glob)


def test_created_from_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    assert shards.created_now() == CREATED
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    now = shards.created_now()
    assert now.endswith("Z") and now[:4] >= "2025"


def _manifest(inputs, fingerprint="f1") -> dict:
    totals = dict.fromkeys(("lines", "rows", "records", "converted", "rejected", "skipped"), 1)
    return {
        "job": "ingest_atlas", "schema": {"a": "int64"}, "options": {"rtt": "min", "src": "from", "shard_rows": 10},
        "inputs": inputs, "totals": totals, "rejected": {"total": 1, "by_reason": {"b": 1}},
        "skipped": {"total": 1, "by_type": {"dns": 1}}, "shards": [{"path": "part-00000-of-00001.parquet"}],
        "rejected_files": [{"path": "rejected/rejected-00000-of-00001.parquet"}], "fingerprint": fingerprint,
    }  # fmt: skip


def test_append_version_sums_and_lists_every_version():
    one = _manifest([{"path": "x", "bytes": 1, "sha256": "s1"}])
    two = {**_manifest([{"path": "y", "bytes": 2, "sha256": "s2"}], "f2"), "rejected": {"total": 2, "by_reason": {"a": 2}}}
    two["shards"] = [{"path": "part-v00002-00000-of-00001.parquet"}]
    merged = shards.append_version(one, two, "T")
    assert merged["version"] == 2 and merged["fingerprint"] == "f2"
    assert [i["path"] for i in merged["inputs"]] == ["x", "y"]
    assert merged["totals"]["rows"] == 2
    assert merged["rejected"] == {"total": 3, "by_reason": {"a": 2, "b": 1}}
    assert merged["skipped"] == {"total": 2, "by_type": {"dns": 2}}
    assert [v["created"] for v in merged["versions"]] == [None, "T"]
    assert merged["versions"][1]["shards"] == two["shards"] and merged["options"] == one["options"]
    assert shards.append_version(None, one, "T")["versions"][0]["version"] == 1
    # A version's fingerprint depends on the previous one and on this version's inputs.
    fp = shards.version_fingerprint("f1", two["inputs"], two["options"])
    assert fp != shards.version_fingerprint("f0", two["inputs"], two["options"])
    assert fp != shards.version_fingerprint("f1", one["inputs"], two["options"])


def test_select_new_by_path_size_and_content(tmp_path):
    for name, data in {"a": b"aaa", "b": b"bbb", "c": b"ccc", "old": b"old"}.items():
        (tmp_path / name).write_bytes(data)
    p = {n: str(tmp_path / n) for n in ("a", "b", "c", "old")}
    digest = discovery.hash_inputs([p["a"], p["b"]])
    manifest = _manifest([
        {"path": p["a"], "bytes": 3, "sha256": digest[p["a"]]},
        {"path": "/elsewhere/b", "bytes": 3, "sha256": digest[p["b"]]},
        {"path": p["old"], "bytes": 3},  # written before hashes were recorded: path and size
    ])  # fmt: skip
    sel = append.select_new([p["a"], p["b"], p["c"], p["old"]], manifest)
    assert sel.new == (p["c"],) and sel.known == ((p["a"], 1), (p["b"], 1), (p["old"], 1))
    (tmp_path / "a").write_bytes(b"aab")
    with pytest.raises(append.InputError, match=r"/a: changed after it was converted \(version 1: 3 bytes, sha256"):
        append.select_new([p["a"]], manifest)
    (tmp_path / "old").write_bytes(b"older")
    with pytest.raises(append.InputError, match=r"/old: changed after it was converted \(version 1: 3 bytes; now 5"):
        append.select_new([p["old"]], manifest)


def test_append_refuses_another_jobs_output(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "_SUCCESS").write_text("{}")
    (out / "manifest.json").write_text(json.dumps({"format_version": 1, "splits": {}}))
    assert ingest_atlas.run(["--input", str(tmp_path), "--output", str(out), "--append", IN_MEMORY]) == 2
    assert "is not an ingest_atlas manifest" in capsys.readouterr().err
    (out / "manifest.json").unlink()
    assert ingest_atlas.run(["--input", str(tmp_path), "--output", str(out), "--append", IN_MEMORY]) == 2
    assert "has _SUCCESS but no readable manifest.json" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["_SUCCESS"]
