"""beam_pipelines.ingest_atlas.lines: a JSON-lines stream cut into lines, whole or by byte ranges."""

from __future__ import annotations

import io

from hypothesis import example, given, settings
from hypothesis import strategies as st

from beam_pipelines.ingest_atlas.lines import LongLine, iter_line_lists


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
