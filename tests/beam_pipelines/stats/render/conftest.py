"""Fixtures for the rendering tests: a raw report of the dirty generated rows, as report.json holds it."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.stats.raw import merge_all, raw_report, summarize_batch


@pytest.fixture(scope="module")
def raw(dirty):
    return json.loads(
        json.dumps(raw_report(merge_all(summarize_batch(b) for b in dirty.to_batches(2000)), [], "x/*.parquet"))
    )
