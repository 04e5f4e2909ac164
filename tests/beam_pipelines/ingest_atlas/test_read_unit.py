"""beam_pipelines.ingest_atlas.read_unit: one work unit read, converted and written to Arrow fragments."""

from __future__ import annotations

import gzip
import io
import json

import orjson
import pyarrow as pa
import pytest

from beam_pipelines.common.errors import InputError
from beam_pipelines.ingest_atlas import discovery, read_unit
from beam_pipelines.ingest_atlas.fragments import UnitCounts, UnitSummary
from beam_pipelines.ingest_atlas.json_array import iter_json_values
from beam_pipelines.ingest_atlas.lines import iter_line_lists


def test_ingest_unit_names_a_corrupt_file(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"type":"ping"}\n' * 1000)[:-20])
    (unit,) = discovery.plan_units(discovery.inspect_inputs([str(path)]))
    with pytest.raises(InputError, match="cut.jsonl.gz: cannot read gzip stream"):
        read_unit.ingest_unit(unit, str(tmp_path))


def test_ingest_unit_compressed_json_array(tmp_path):
    """A gzip-compressed API download (one JSON array): its layout is found while reading."""
    result = {"af": 6, "dst_addr": "2001:db8::1", "from": "2001:db8::2", "msm_id": 2001, "size": 20,
              "timestamp": 1700000000, "type": "ping", "result": [{"rtt": 3.5}, {"x": "*"}]}  # fmt: skip
    items = [result, {"type": "traceroute"}, 7, {**result, "msm_id": 2002}]
    path = tmp_path / "api.json.gz"
    path.write_bytes(gzip.compress(json.dumps(items).encode()))
    (unit,) = discovery.plan_units(discovery.inspect_inputs(discovery.expand_inputs([str(tmp_path)])))  # a folder
    assert (unit.compression, unit.layout) == ("gzip", None)
    summary = read_unit.ingest_unit(unit, str(tmp_path), chunk_bytes=16)
    assert isinstance(summary, UnitSummary)
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
    counts = UnitCounts()
    out = list(read_unit.ingest_stream(values, layout, "f", "min", "from", counts, batch_rows=2))
    rows = pa.Table.from_batches([b for kind, b in out if kind == "rows"])
    rejected = pa.Table.from_batches([b for kind, b in out if kind == "rejected"])
    assert rows.column("msm_id").to_pylist() == [i for i in range(20) if i % 3]
    assert rejected.column("line_number").to_pylist() == [i + 1 for i in range(20) if i % 3 == 0]
    assert set(rejected.column("reason").to_pylist()) == {"missing_msm_id"}
    assert (counts.lines, counts.records, counts.converted, sum(counts.rejected.values())) == (20, 20, 13, 7)
