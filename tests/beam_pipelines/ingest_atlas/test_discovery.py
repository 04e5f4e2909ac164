"""beam_pipelines.ingest_atlas.discovery: finding and hashing the input files, and planning the work units."""

from __future__ import annotations

import hashlib

import pytest

from beam_pipelines.common.errors import InputError
from beam_pipelines.ingest_atlas import discovery


def test_sniff_layout():
    assert discovery.sniff_layout(b"\xef\xbb\xbf\n [{") == "array"
    assert discovery.sniff_layout(b'{"a": [1]}') == "lines"


def test_expand_inputs_sorted_and_missing(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text("{}\n")
    assert discovery.expand_inputs([str(tmp_path / "*.jsonl"), str(tmp_path / "a.jsonl")]) == [
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
    ]
    with pytest.raises(InputError, match="matches no file"):
        discovery.expand_inputs([str(tmp_path / "*.bz2")])


def test_plan_units_splits_only_plain_json_lines():
    files = [
        discovery.InputFile(0, "a.jsonl", 250, None, "lines"),
        discovery.InputFile(1, "b.json", 250, None, "array"),
        discovery.InputFile(2, "c.bz2", 250, "bz2", None),
    ]
    units = discovery.plan_units(files, split_bytes=100)
    assert [(u.file_index, u.range_index, u.start, u.end) for u in units] == [
        (0, 0, 0, 100), (0, 1, 100, 200), (0, 2, 200, 250), (1, 0, 0, None), (2, 0, 0, None),
    ]  # fmt: skip


def test_hash_inputs_alone_and_in_threads(tmp_path):
    expected = {}
    for name, data in {"a": b"aaa", "b": b"bbb", "c": b"", "d": b"d" * 100_000}.items():
        (tmp_path / name).write_bytes(data)
        expected[str(tmp_path / name)] = hashlib.sha256(data).hexdigest()
    paths = list(expected)
    assert discovery.hash_inputs(paths) == expected
    assert discovery.hash_inputs(paths, total_bytes=1 << 30) == expected  # threads (as for large files)
    with pytest.raises(InputError, match="missing: cannot read"):
        discovery.hash_inputs([*paths, str(tmp_path / "missing")], total_bytes=1 << 30)
    with pytest.raises(InputError, match="missing: cannot read"):
        discovery.input_size(str(tmp_path / "missing"))
