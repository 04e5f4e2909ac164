"""The tests' own input files: a missing real RIPE Atlas file skips what needs it, with the reason."""

from __future__ import annotations

import pytest

from tests.data_files import ATLAS_FILE, SAMPLE_DIR, require_atlas_file


def test_a_missing_atlas_file_skips_and_names_it(tmp_path):
    missing = tmp_path / "ping-results.jsonl.gz"
    with pytest.raises(pytest.skip.Exception, match="needs the real RIPE Atlas file .*CI has it") as info:
        require_atlas_file(missing)
    assert str(missing) in str(info.value)


def test_a_present_atlas_file_is_returned(tmp_path):
    present = tmp_path / "ping-results.jsonl.gz"
    present.write_bytes(b"")
    assert require_atlas_file(present) == present


def test_paths_point_at_the_sample_and_the_shared_folder():
    assert SAMPLE_DIR.is_dir() and any(SAMPLE_DIR.glob("*.parquet"))
    assert ATLAS_FILE.parts[-4:] == ("shared", "data", "atlas", "ping-results.jsonl.gz")
