"""beam_pipelines.common.errors (exit codes by error kind) and common.files (hashes, atomic writes)."""

from __future__ import annotations

import hashlib
import json

import pytest

from beam_pipelines.common import errors
from beam_pipelines.common.files import atomic_path, sha256_file, write_json_atomic


@pytest.mark.parametrize(
    "exc, code",
    [
        (errors.UsageError("x"), 2),
        (errors.InputError("x"), 2),
        (errors.RunError("x"), 1),
        (RuntimeError("x"), 1),
        (OSError("x"), 1),
    ],
)
def test_exit_code_by_kind(exc, code):
    assert errors.exit_code(exc) == code


def test_subclasses_keep_their_kind():
    class DatasetError(errors.InputError):
        pass

    assert errors.exit_code(DatasetError("gone")) == errors.EXIT_USAGE


def test_report_prints_one_error_line_and_notes(capsys):
    code = errors.report(errors.InputError("data/x.parquet: not Parquet"), "nothing was written")
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: data/x.parquet: not Parquet", "nothing was written"]
    assert code == 2


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"ping" * 3_000_000)  # larger than one 4 MiB read
    assert sha256_file(str(path)) == hashlib.sha256(b"ping" * 3_000_000).hexdigest()


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(str(target)) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"complete")
        assert not target.exists()  # nothing visible under the final name until the block ends
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise ValueError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_write_json_atomic_sorted_and_readable(tmp_path):
    target = tmp_path / "m.json"
    write_json_atomic(str(target), {"b": 1, "a": [1, 2]})
    text = target.read_text()
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")
    assert json.loads(text) == {"a": [1, 2], "b": 1}
