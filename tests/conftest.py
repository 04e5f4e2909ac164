"""Shared fixtures: paths to the repository, the bundled sample and the real RIPE Atlas file."""

from __future__ import annotations

import pathlib

import pytest

from beam_pipelines.pretokenize import pipeline as pretokenize

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
# The real RIPE Atlas results live in the shared folder beside the checkout (CI lays it there too).
ATLAS_FILE = REPO_ROOT.parent / "shared" / "data" / "atlas" / "ping-results.jsonl.gz"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_dir() -> pathlib.Path:
    assert SAMPLE_DIR.is_dir(), f"bundled sample missing: {SAMPLE_DIR}"
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def atlas_file() -> pathlib.Path:
    assert ATLAS_FILE.is_file(), f"real RIPE Atlas file missing: {ATLAS_FILE}"
    return ATLAS_FILE


@pytest.fixture(scope="session")
def sample_dataset(sample_dir, tmp_path_factory) -> pathlib.Path:
    """``beam_pipelines.pretokenize`` on the bundled sample (about 6,400 records of 1024 tokens), made once
    per test session for the trainer and evaluation tests; do not modify."""
    out = tmp_path_factory.mktemp("pretokenized") / "sample"
    rc = pretokenize.run(
        ["--input", str(sample_dir / "*.parquet"), "--output", str(out), "--direct_running_mode=in_memory"]
    )
    assert rc == 0
    assert (out / "manifest.json").is_file()
    return out
