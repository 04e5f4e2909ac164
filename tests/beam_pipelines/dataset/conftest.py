"""Fixtures for the data contract tests (builders in helpers.py)."""

from __future__ import annotations

import pytest

from tests.beam_pipelines.dataset.helpers import write_tiny_dataset


@pytest.fixture
def tiny_dataset(tmp_path) -> str:
    """A fresh tiny dataset at ``tmp_path/ds`` that a test may damage."""
    root = str(tmp_path / "ds")
    write_tiny_dataset(root)
    return root
