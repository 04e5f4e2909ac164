"""beam_pipelines.ingest_atlas.json_array: the elements of a JSON array (an API download), one at a time."""

from __future__ import annotations

import io
import json

import pytest

from beam_pipelines.ingest_atlas.json_array import INVALID, iter_json_values


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
