"""Trainer fixtures: a private copy of the session's pretokenized sample (tests/conftest.py)."""

from __future__ import annotations

import pathlib
import shutil

import pytest


@pytest.fixture
def dataset_copy(sample_dataset, tmp_path) -> pathlib.Path:
    """A private copy of the sample dataset that a test may damage."""
    dst = tmp_path / "dataset"
    shutil.copytree(sample_dataset, dst)
    return dst
