"""``python -m beam_pipelines.update``: two rounds of real dump files -> the same measurements per split as a
clean build from all the files; a rerun is a no-op; SIGKILL during the pretokenize stage then rerun equals a
run that was never interrupted; the update's own lock; bad input.

The dumps are real RIPE Atlas results (every 150th line of the real file): each probe's earlier results
are in round 1, its later ones in round 2, so round 2 brings new results of the same sources.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter

import pytest

from beam_pipelines.dataset.verify import verify_dataset
from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from beam_pipelines.pretokenize import pipeline as pretokenize
from beam_pipelines.update import command as update
from tests.beam_pipelines.ingest_atlas.helpers import tree_bytes
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY, decoded_records, load_manifest, read_split, row_key
from tests.data_files import REPO_ROOT

EPOCH = "1796032800"
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def rounds(atlas_file) -> tuple[dict, dict]:
    """(round 1 files, round 2 files): name -> bytes."""
    with gzip.open(atlas_file, "rb") as f:
        lines = [line.rstrip(b"\n") for line in itertools.islice(f, 0, None, 150)]
    by_probe: dict[int, list] = {}
    for line in lines:
        by_probe.setdefault(json.loads(line).get("prb_id"), []).append(line)
    first, second = [[], []], [[], []]
    for i, probe in enumerate(sorted(by_probe, key=str)):
        results = sorted(by_probe[probe], key=lambda x: json.loads(x).get("timestamp", 0))
        half = len(results) // 2
        first[i % 2].extend(results[:half])
        second[i % 2].extend(results[half:])
    one = {"r1-a.jsonl.bz2": bz2.compress(b"\n".join(first[0]) + b"\n"), "r1-b.jsonl": b"\n".join(first[1]) + b"\n"}
    two = {
        "r2-a.jsonl.gz": gzip.compress(b"\n".join(second[0]) + b"\n"),
        "r2-b.json": json.dumps([json.loads(x) for x in second[1]]).encode(),
    }
    return one, two


def _drop(folder, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _argv(root, runner: tuple[str, ...] = (IN_MEMORY,)) -> list[str]:
    return ["--incoming", str(root / "in"), "--parquet", str(root / "pq"), "--dataset", str(root / "ds"), *runner]


@pytest.fixture(scope="module")
def reference(rounds, tmp_path_factory):
    """Two updates, never interrupted: round 1, then round 2 added. Returns (root, ds tree after round 1).

    No runner option, as a scheduler calls it: both pretokenize steps are small, so the update runs them
    with --in_process (no Beam); the tests compare the result with Beam runs."""
    one, two = rounds
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        for files in (one, two):
            _drop(root / "in", files)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                assert update.run(_argv(root, runner=())) == 0
            assert "without Beam (--in_process)" in err.getvalue(), err.getvalue()
            if files is one:
                after_one = tree_bytes(root / "ds")
    return root, after_one


def _measurements(ds) -> dict[str, Counter]:
    manifest = load_manifest(ds)
    return {s: Counter(row_key(m) for rec in decoded_records(read_split(ds, manifest, s)) for m in rec) for s in SPLITS}


@pytest.mark.slow
def test_two_rounds_equal_a_clean_build_of_all_files(reference, rounds, tmp_path):
    root, after_one = reference
    ds = root / "ds"
    m = load_manifest(ds)
    assert m["version"] == 2 and load_manifest(root / "pq")["version"] == 2
    verify_dataset(str(ds), m, checksums=True)
    after_two = tree_bytes(ds)
    for name, data in after_one.items():  # version 1's files: same names, same bytes
        if name != "manifest.json":
            assert after_two[name] == data, name
    assert any("-v00002-" in name for name in after_two)

    clean = tmp_path / "clean"  # every dump file at once, plain ingest and pretokenize
    _drop(clean / "in", {**rounds[0], **rounds[1]})
    assert ingest_atlas.run(["--input", str(clean / "in"), "--output", str(clean / "pq"), IN_MEMORY]) == 0
    assert pretokenize.run(["--input", str(clean / "pq"), "--output", str(clean / "ds"), IN_MEMORY]) == 0
    got, want = _measurements(ds), _measurements(clean / "ds")
    assert all(want[s] for s in SPLITS)  # every split holds measurements: the check means something
    for s in SPLITS:
        assert got[s] == want[s], s  # every measurement once, each source in one split across versions
    assert m["rows"] == load_manifest(clean / "ds")["rows"]


@pytest.mark.slow
def test_a_rerun_with_nothing_new_changes_nothing(reference, capsys):
    root, _ = reference
    before = tree_bytes(root)
    assert update.run(_argv(root)) == 0
    out = capsys.readouterr().out
    assert "ingest_atlas: nothing to do" in out and "update: nothing to do" in out
    assert tree_bytes(root) == before


def _same_tree(a, b) -> None:
    """Byte-identical files; manifests equal once the folder each run used is replaced by a placeholder."""
    ta, tb = tree_bytes(a), tree_bytes(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        if name.endswith("manifest.json"):
            assert ta[name].replace(str(a.parent).encode(), b"ROOT") == tb[name].replace(str(b.parent).encode(), b"ROOT"), name
        else:
            assert ta[name] == tb[name], name


@pytest.mark.slow
def test_sigkill_during_pretokenize_then_rerun_equals_an_uninterrupted_run(reference, rounds, tmp_path, monkeypatch):
    """Killed while pretokenize gives its new files their final names (some are in place, unlisted; the
    other kill points of an append are pretokenize's own tests)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    when, what = "after", "move:/ds/"
    one, two = rounds
    _drop(tmp_path / "in", one)
    assert update.run(_argv(tmp_path)) == 0
    version1 = tree_bytes(tmp_path / "ds")
    _drop(tmp_path / "in", two)
    func, match = what.split(":", 1)
    target = f"beam_pipelines.common.storage:{func}:{tmp_path}{match}"
    cmd = [sys.executable, "-m", "tests.beam_pipelines.ingest_atlas.interrupt", when, target,
           "beam_pipelines.update.command", "--", *_argv(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, timeout=300, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert b"[2/2] pretokenize --append" in proc.stderr
    # The dataset is still version 1, complete and readable; the Parquet folder is at version 2.
    left = tree_bytes(tmp_path / "ds")
    assert left["manifest.json"] == version1["manifest.json"]
    verify_dataset(str(tmp_path / "ds"), load_manifest(tmp_path / "ds"), checksums=True)
    assert load_manifest(tmp_path / "pq")["version"] == 2
    assert (tmp_path / "pq.update.lock").exists()  # the killed run's: its owner is dead, the rerun takes it over

    assert update.run(_argv(tmp_path)) == 0
    root, _ = reference
    _same_tree(tmp_path / "ds", root / "ds")
    # The Parquet shards too (the ingest manifest and rejected lines name the dump files' paths, which differ).
    rows = {k: v for k, v in tree_bytes(tmp_path / "pq").items() if k.startswith("part-")}
    assert rows == {k: v for k, v in tree_bytes(root / "pq").items() if k.startswith("part-")}
    assert not (tmp_path / "pq.update.lock").exists()


def test_a_second_update_is_refused_while_one_runs(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    lock = {"host": socket.gethostname(), "pid": os.getppid(), "started": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "pq.update.lock").write_text(json.dumps(lock))
    assert update.run(_argv(tmp_path)) == 2
    assert f"{tmp_path / 'pq'} is being written by another run" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["in", "pq.update.lock"]


def test_bad_input_and_options(tmp_path, capsys):
    assert update.run(["--incoming", str(tmp_path / "nope"), "--parquet", str(tmp_path / "pq"), "--dataset", "d"]) == 2
    assert "--incoming " + str(tmp_path / "nope") + ": no such folder" in capsys.readouterr().err
    assert update.run(["--parquet", "p", "--dataset", "d"]) == 2  # --incoming missing
    # Nothing in the folder and nothing ingested yet: nothing to do.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ping-2026-11-30T1000.bz2.part").write_bytes(b"half a download")
    (tmp_path / "in" / ".ping-2026-11-30T1100.bz2").write_bytes(b"a hidden one")
    assert update.run(_argv(tmp_path)) == 0
    assert "update: nothing to do" in capsys.readouterr().out
    assert not (tmp_path / "pq").exists() and not (tmp_path / "ds").exists()


def test_a_stray_parquet_file_is_not_given_to_pretokenize(tmp_path, capsys):
    """pretokenize reads PQ/*.parquet: a Parquet file there that the ingest manifest does not list stops the
    update (exit 1) before pretokenize runs."""
    (tmp_path / "in").mkdir()
    pq = tmp_path / "pq"
    pq.mkdir()
    (pq / "manifest.json").write_text(json.dumps({"job": "ingest_atlas", "fingerprint": "f", "shards": []}))
    (pq / "_SUCCESS").write_text(json.dumps({"fingerprint": "f"}))
    (pq / "mine.parquet").write_bytes(b"PAR1")
    assert update.run(_argv(tmp_path)) == 1
    assert "holds Parquet files its manifest does not list (['mine.parquet'])" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.slow
def test_a_failing_step_gives_its_exit_code(tmp_path, capsys):
    """A corrupt dump file: ingest_atlas fails (exit 1) naming it; the update stops there and says so; once
    the file is replaced, the rerun completes."""
    _drop(tmp_path / "in", {"x.jsonl.bz2": bz2.compress(b'{"type":"ping"}\n' * 5000)[:40] + b"\x00" * 400})
    assert update.run(_argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "x.jsonl.bz2: cannot read bz2 stream" in err and "ingest_atlas failed (exit 1)" in err
    assert not (tmp_path / "ds").exists()
    shutil.rmtree(tmp_path / "in")
    _drop(tmp_path / "in", {"y.jsonl": b'{"type":"dns"}\n'})
    # Only a non-ping result: the Parquet folder exists with no row, and there is nothing to pretokenize.
    assert update.run(_argv(tmp_path)) == 0
    assert "hold no row" in capsys.readouterr().out
