"""Trainer fixtures: the bundled sample, pretokenized by the real job."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from beam_pipelines import pretokenize


@pytest.fixture(scope="session")
def sample_dataset(sample_dir, tmp_path_factory) -> pathlib.Path:
    """``beam_pipelines.pretokenize`` on the bundled sample (about 6,400 records of 1024 tokens); do not modify."""
    out = tmp_path_factory.mktemp("pretokenized") / "sample"
    rc = pretokenize.run(
        ["--input", str(sample_dir / "*.parquet"), "--output", str(out), "--direct_running_mode=in_memory"]
    )
    assert rc == 0
    assert (out / "manifest.json").is_file()
    return out


@pytest.fixture
def dataset_copy(sample_dataset, tmp_path) -> pathlib.Path:
    """A private copy of the sample dataset that a test may damage."""
    dst = tmp_path / "dataset"
    shutil.copytree(sample_dataset, dst)
    return dst
