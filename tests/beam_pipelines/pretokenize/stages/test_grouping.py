"""The grouping stage's sorts: each fast path gives the order of the plain multi-key sort it replaces."""

from __future__ import annotations

import os

import numpy as np
import pytest

from beam_pipelines.pretokenize.stages import grouping


def _columns(rng, n: int, ipv6: bool, ts_span: int, in_order: bool) -> dict:
    """Part columns as _family_streams gives them: few sources, many ties in time, (file, row) unique."""
    sources = rng.integers(0, 40, n).astype(np.uint64)
    file = np.sort(rng.integers(0, 3, n)).astype(np.int32)
    row = np.arange(n, dtype=np.int64)
    if not in_order:
        perm = rng.permutation(n)
        file, row = file[perm], row[perm]
    cols = {
        "split": rng.integers(0, 3, n).astype(np.int8),
        "src_hi": (sources * np.uint64(7919) + np.uint64(1)) if ipv6 else np.zeros(n, np.uint64),
        "src_lo": sources * np.uint64(2654435761) % np.uint64(1 << 32),
        "timestamp": 1_700_000_000 + rng.integers(0, 5, n) * (ts_span // 4),
        "file": file,
        "row": row,
    }
    return cols


@pytest.mark.parametrize(
    "ipv6, ts_span, in_order",
    [(False, 3600, True), (False, 1 << 34, True), (True, 3600, True), (False, 3600, False), (True, 3600, False)],
)
def test_source_time_order_equals_the_five_key_sort(ipv6, ts_span, in_order):
    rng = np.random.default_rng(ts_span + 2 * ipv6 + in_order)
    cols = _columns(rng, 5000, ipv6, ts_span, in_order)
    assert grouping._in_read_order(cols["file"], cols["row"]) is in_order
    for split in range(3):
        sel = np.flatnonzero(cols["split"] == split)
        keys = tuple(cols[k][sel] for k in ("row", "file", "timestamp", "src_lo", "src_hi"))
        np.testing.assert_array_equal(grouping._source_time_order(cols, sel), np.lexsort(keys))


def test_in_read_order_needs_strictly_increasing_file_then_row():
    assert grouping._in_read_order(np.array([0, 0, 1, 1]), np.array([5, 9, 0, 3]))
    assert not grouping._in_read_order(np.array([0, 0, 1, 1]), np.array([5, 5, 0, 3]))  # a repeated row
    assert not grouping._in_read_order(np.array([0, 1, 0]), np.array([0, 0, 1]))  # back to file 0


def test_part_files_sort_by_task_index_not_by_name():
    paths = [f"/s/buckets/00001/{t}.arrow" for t in ("100000", "00002", "99999", "00010")]
    assert [os.path.basename(p) for p in sorted(paths, key=grouping._task_order)] == [
        "00002.arrow",
        "00010.arrow",
        "99999.arrow",
        "100000.arrow",
    ]
