"""beam_pipelines.ingest_atlas.streams without Beam: finding inputs, streaming lines and JSON arrays, work units."""

from __future__ import annotations

import bz2
import gzip
import io
import json

import orjson
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from beam_pipelines.ingest_atlas import streams
from beam_pipelines.ingest_atlas.streams import INVALID, InputError, LongLine, iter_json_values, iter_line_lists


def lines_of(data: bytes, start=0, end=None, chunk_bytes=7, max_line_bytes=1 << 20, head=b"") -> list:
    f = io.BytesIO(data)
    f.seek(len(head))
    return [line for chunk in iter_line_lists(f, start, end, head, chunk_bytes, max_line_bytes) for line in chunk]


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    trailing_newline=st.booleans(),
    cuts=st.lists(st.integers(0, 200), max_size=4),
    chunk=st.integers(1, 9),
    head=st.integers(0, 30),
)
@example(lines=[b"a", b"b", b"c"], trailing_newline=False, cuts=[1], chunk=9, head=0)  # one read, several lines
@example(lines=[b"a", b"b", b"c"], trailing_newline=True, cuts=[], chunk=9, head=6)  # the head holds every line
def test_byte_ranges_partition_the_lines(lines, trailing_newline, cuts, chunk, head):
    """Whatever the cut points and chunk size, the ranges' lines are the file's lines, each once, in order."""
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    expected = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        expected.pop()
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    got = []
    for start, end in zip(bounds, bounds[1:]):
        got.extend(lines_of(data, start, end, chunk_bytes=chunk))
    assert got == expected
    assert lines_of(data, chunk_bytes=chunk) == expected
    assert lines_of(data, chunk_bytes=chunk, head=data[:head]) == expected  # compressed streams: sniffed head


def test_lines_blank_crlf_and_head():
    data = b'{"a":1}\r\n\n  \n{"b":2}'
    assert lines_of(data) == [b'{"a":1}\r', b"", b"  ", b'{"b":2}']
    assert lines_of(data, head=data[:5]) == lines_of(data)


def test_long_lines_are_reported_not_held():
    data = b"short\n" + b"x" * 100 + b"\nafter\n" + b"y" * 50
    got = lines_of(data, max_line_bytes=20)
    assert got[0] == b"short" and got[2] == b"after"
    assert isinstance(got[1], LongLine) and got[1].length == 100 and got[1].head.startswith(b"xxx")
    assert isinstance(got[3], LongLine) and got[3].length == 50
    # A range boundary inside a long line: it belongs to the range where it starts.
    first, second = lines_of(data, 0, 40, max_line_bytes=20), lines_of(data, 40, len(data), max_line_bytes=20)
    assert len(first) == 2 and isinstance(first[1], LongLine) and second[0] == b"after"


def values_of(text: bytes, chunk_bytes=5, max_value_bytes=1 << 20) -> list:
    return list(iter_json_values(io.BytesIO(text), b"", chunk_bytes, max_value_bytes))


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 20])
def test_json_array_elements(chunk):
    objs = [{"type": "ping", "i": i, "s": "a}, {b ]"} for i in range(5)]
    text = json.dumps(objs, indent=1).encode()
    got = values_of(b"\xef\xbb\xbf \n" + text, chunk)
    assert [v for v, _ in got] == objs
    assert [json.loads(t) for _, t in got] == objs


def test_json_arrays_concatenated_and_objects():
    got = values_of(b'[{"a":1},{"a":2}]\n[{"a":3}]\n{"a":4} [] [5, [6]]')
    assert [v for v, _ in got] == [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}, 5, [6]]


@pytest.mark.parametrize("chunk, max_value", [(2, 1 << 20), (16, 1 << 20), (1 << 20, 1 << 20), (2, 12), (4, 30)])
def test_json_array_invalid_element_resyncs(chunk, max_value):
    text = b'[{"a":1}, {"a":2,,}, {"a":3}, {"a": tru}]'
    got = values_of(text, chunk, max_value)
    assert [v for v, _ in got] == [{"a": 1}, INVALID, {"a": 3}, INVALID]
    assert got[1][1] == '{"a":2,,}' and got[3][1].startswith('{"a": tru')


def test_json_array_truncated():
    got = values_of(b'[{"a":1}, {"a":2')
    assert got[0][0] == {"a": 1} and got[1] == (INVALID, '{"a":2')


def test_detect_compression(tmp_path):
    assert streams.detect_compression("x.jsonl", b"{") is None
    assert streams.detect_compression("x", gzip.compress(b"{}")) == "gzip"
    assert streams.detect_compression("x.bz2", bz2.compress(b"{}")) == "bz2"
    with pytest.raises(InputError, match="x.gz: named like a gzip file"):
        streams.detect_compression("x.gz", b"{}")
    assert streams.sniff_layout(b"\xef\xbb\xbf\n [{") == "array"
    assert streams.sniff_layout(b'{"a": [1]}') == "lines"


def test_expand_inputs_sorted_and_missing(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text("{}\n")
    assert streams.expand_inputs([str(tmp_path / "*.jsonl"), str(tmp_path / "a.jsonl")]) == [
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
    ]
    with pytest.raises(InputError, match="matches no file"):
        streams.expand_inputs([str(tmp_path / "*.bz2")])


def test_plan_units_splits_only_plain_json_lines():
    files = [
        streams.InputFile(0, "a.jsonl", 250, None, "lines"),
        streams.InputFile(1, "b.json", 250, None, "array"),
        streams.InputFile(2, "c.bz2", 250, "bz2", None),
    ]
    units = streams.plan_units(files, split_bytes=100)
    assert [(u.file_index, u.range_index, u.start, u.end) for u in units] == [
        (0, 0, 0, 100), (0, 1, 100, 200), (0, 2, 200, 250), (1, 0, 0, None), (2, 0, 0, None),
    ]  # fmt: skip


def test_ingest_unit_names_a_corrupt_file(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"type":"ping"}\n' * 1000)[:-20])
    (unit,) = streams.plan_units(streams.inspect_inputs([str(path)]))
    with pytest.raises(InputError, match="cut.jsonl.gz: cannot read gzip stream"):
        streams.ingest_unit(unit, str(tmp_path))


def test_ingest_unit_compressed_json_array(tmp_path):
    """A gzip-compressed API download (one JSON array): its layout is found while reading."""
    result = {"af": 6, "dst_addr": "2001:db8::1", "from": "2001:db8::2", "msm_id": 2001, "size": 20,
              "timestamp": 1700000000, "type": "ping", "result": [{"rtt": 3.5}, {"x": "*"}]}  # fmt: skip
    items = [result, {"type": "traceroute"}, 7, {**result, "msm_id": 2002}]
    path = tmp_path / "api.json.gz"
    path.write_bytes(gzip.compress(json.dumps(items).encode()))
    (unit,) = streams.plan_units(streams.inspect_inputs(streams.expand_inputs([str(tmp_path)])))  # a folder
    assert (unit.compression, unit.layout) == ("gzip", None)
    summary = streams.ingest_unit(unit, str(tmp_path), chunk_bytes=16)
    assert isinstance(summary, streams.UnitSummary)
    assert (summary.lines, summary.rows, summary.skipped, summary.rejected) == (
        4, 2, {"traceroute": 1}, {"not_an_object": 1},
    )  # fmt: skip
    assert summary.rows_fragment.rows == 2 and summary.fragment("rejected") == summary.rejected_fragment
    rows = pa.ipc.open_file(summary.rows_fragment.path).read_all()
    assert rows.column("msm_id").to_pylist() == [2001, 2002] and rows.column("packet_error_count").to_pylist() == [1, 1]
    rejected = pa.ipc.open_file(summary.rejected_fragment.path).read_all().to_pylist()
    assert rejected == [{"file": str(path), "line_number": 3, "reason": "not_an_object", "raw_line": "7"}]


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_ingest_stream_batches_keep_everything_in_order(layout):
    good = {"af": 4, "dst_addr": "192.0.2.1", "from": "192.0.2.2", "msm_id": 0, "size": 48,
            "timestamp": 1700000000, "type": "ping", "result": [{"rtt": 1.0}]}  # fmt: skip
    items = [{**good, "msm_id": i} if i % 3 else {"type": "ping", "n": i} for i in range(20)]
    text = b"\n".join(orjson.dumps(i) for i in items) if layout == "lines" else orjson.dumps(items)
    f = io.BytesIO(text)
    values = iter_line_lists(f, chunk_bytes=50) if layout == "lines" else iter_json_values(f, chunk_bytes=50)
    counts = streams.UnitCounts()
    out = list(streams.ingest_stream(values, layout, "f", "min", "from", counts, batch_rows=2))
    rows = pa.Table.from_batches([b for kind, b in out if kind == "rows"])
    rejected = pa.Table.from_batches([b for kind, b in out if kind == "rejected"])
    assert rows.column("msm_id").to_pylist() == [i for i in range(20) if i % 3]
    assert rejected.column("line_number").to_pylist() == [i + 1 for i in range(20) if i % 3 == 0]
    assert set(rejected.column("reason").to_pylist()) == {"missing_msm_id"}
    assert (counts.lines, counts.records, counts.converted, sum(counts.rejected.values())) == (20, 20, 13, 7)
