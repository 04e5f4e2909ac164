"""The output-directory guard: the writer lock (refusal, stale takeover, release) and the job's rules."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from beam_pipelines.common.errors import EXIT_USAGE, UsageError, exit_code
from beam_pipelines.common.output import LOCK_NAME, OutputDir, OutputRules, WriterLock


def _lock(directory, pid, host=None, started="2026-01-01T00:00:00+00:00") -> str:
    text = json.dumps({"host": host or socket.gethostname(), "pid": pid, "started": started})
    (directory / LOCK_NAME).write_text(text)
    return text


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _rules(complete=lambda overwrite: None) -> OutputRules:
    return OutputRules(
        is_own={"data", "manifest.json", "manifest.json.tmp", "_tmp"}.__contains__,
        markers=("manifest.json", "manifest.json.tmp"),
        complete=complete,
        foreign="{out} holds {names}",
    )


def test_lock_is_taken_with_its_owner_and_released(tmp_path):
    out = tmp_path / "out"
    with OutputDir(str(out)):
        owner = json.loads((out / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["started"]
        (out / "written").write_text("x")
    assert os.listdir(out) == ["written"]  # no lock left


def test_a_directory_created_for_nothing_is_removed(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(ValueError, match="bad input"), OutputDir(str(out)):
        raise ValueError("bad input")  # found after the lock was taken, before anything was written
    assert os.listdir(tmp_path) == []  # and the folders above it that it needed
    (tmp_path / "kept").mkdir()
    with OutputDir(str(tmp_path / "kept")):
        pass
    assert (tmp_path / "kept").is_dir()  # it existed before: left as it was


def test_lock_is_released_when_the_job_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), OutputDir(str(tmp_path)):
        (tmp_path / "partial").write_text("x")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["partial"]


def test_a_live_writer_is_refused_at_once_and_nothing_is_touched(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "data").mkdir()
    text = _lock(tmp_path, os.getppid())  # a live process on this host
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UsageError) as info, OutputDir(str(tmp_path)):
        pytest.fail("entered a directory another writer holds")
    message = str(info.value)
    assert str(tmp_path) in message and f"pid {os.getppid()} on {socket.gethostname()}" in message
    assert "2026-01-01T00:00:00+00:00" in message and exit_code(info.value) == EXIT_USAGE
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / LOCK_NAME).read_text() == text


def test_a_writer_on_another_host_is_never_taken_for_dead(tmp_path):
    _lock(tmp_path, _dead_pid(), host="some-other-host")
    with pytest.raises(UsageError, match="pid .* on some-other-host"):
        WriterLock(str(tmp_path)).acquire()


def test_a_lock_without_an_owner_is_refused(tmp_path):
    (tmp_path / LOCK_NAME).write_text("")  # created, not yet written (or damaged)
    with pytest.raises(UsageError, match="locked by another writer"):
        WriterLock(str(tmp_path)).acquire()
    assert (tmp_path / LOCK_NAME).exists()


def test_a_dead_writers_lock_is_taken_over_with_a_note(tmp_path, capsys):
    pid = _dead_pid()
    _lock(tmp_path, pid)
    with OutputDir(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"note: took over the writer lock of a run that is gone (pid {pid} on " in capsys.readouterr().err
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_lock_object_in_the_same_process_is_refused(tmp_path):
    with WriterLock(str(tmp_path)), pytest.raises(UsageError, match="being written by another run"):
        WriterLock(str(tmp_path)).acquire()


def test_output_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    with pytest.raises(UsageError, match="exists and is not a directory"), OutputDir(str(path)):
        pass
    assert path.read_text() == "x"


def test_rules_refuse_foreign_entries_unless_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    with pytest.raises(UsageError, match=r"holds \['notes.txt'\]"), OutputDir(str(tmp_path)) as out:
        out.prepare(_rules())
    assert sorted(os.listdir(tmp_path)) == ["data", "notes.txt"]
    with OutputDir(str(tmp_path)) as out:
        out.prepare(_rules(), overwrite=True)
        assert sorted(os.listdir(tmp_path)) == [LOCK_NAME, "notes.txt"]  # own entries cleared, foreign kept
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_rules_complete_output_skip_refuse_or_rewrite_markers_first(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part").write_text("x")
    seen = []

    def complete(overwrite):
        seen.append(sorted(os.listdir(tmp_path)))  # decided under the lock, before anything is removed
        if overwrite:
            return None
        if (tmp_path / "manifest.json").read_text() == "{}":
            return "nothing to do"
        raise UsageError("a different output")

    with OutputDir(str(tmp_path)) as out:
        assert out.prepare(_rules(complete)) == "nothing to do"
    assert seen[-1] == [LOCK_NAME, "data", "manifest.json"]
    assert sorted(os.listdir(tmp_path)) == ["data", "manifest.json"]
    (tmp_path / "manifest.json").write_text('{"other": 1}')
    with pytest.raises(UsageError, match="a different output"), OutputDir(str(tmp_path)) as out:
        out.prepare(_rules(complete))
    assert sorted(os.listdir(tmp_path)) == ["data", "manifest.json"]
    with OutputDir(str(tmp_path)) as out:
        assert out.prepare(_rules(complete), overwrite=True) is None and os.listdir(tmp_path) == [LOCK_NAME]
    assert os.listdir(tmp_path) == []


def test_markers_go_first_then_the_other_own_entries(tmp_path, monkeypatch):
    from beam_pipelines.common import output

    for name in ("manifest.json", "manifest.json.tmp"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "data").mkdir()
    (tmp_path / "_tmp").mkdir()
    removed = []
    remove, rmtree = os.remove, output.shutil.rmtree
    monkeypatch.setattr(output.os, "remove", lambda p: (removed.append(os.path.basename(p)), remove(p)))
    monkeypatch.setattr(output.shutil, "rmtree", lambda p: (removed.append(os.path.basename(p)), rmtree(p)))
    with OutputDir(str(tmp_path)) as out:
        out.prepare(_rules(), overwrite=True)
        assert removed == ["manifest.json", "manifest.json.tmp", "_tmp", "data"]
