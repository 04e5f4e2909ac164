"""ingest_atlas on the real RIPE Atlas file (488,061 results): exact accounting, hand-read spot checks,
RIPE's own min RTT, packets with --rtt each, and the round trip through pretokenize and the tokenizer."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import gzip
import ipaddress
import os
import shutil
import struct

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.ingest_atlas import convert as atlas

from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from tests.beam_pipelines.ingest_atlas.helpers import IN_MEMORY, load_manifest, read_rejected, read_rows

# Every test here ingests or reads the whole 488k-line file: real-file scale, not the quick set.
pytestmark = pytest.mark.slow

RESULTS = 488_061


@dataclasses.dataclass
class RawFacts:
    """What the tests need of each line of the real file, read independently of the code under test."""

    ripe_min: list  # the result's own `min` as a float, or None
    packets: list  # entries of `result` that are not duplicate replies; 1 for a result without `result`
    has_from: list  # `from` is a non-empty string
    has_local: list  # `src_addr` non-empty, or an entry carries `srcaddr`
    has_size: list


@pytest.fixture(scope="session")
def raw(atlas_file) -> RawFacts:
    facts = RawFacts([], [], [], [], [])
    with gzip.open(atlas_file, "rb") as f:
        for line in f:
            d = orjson.loads(line)
            m = d.get("min")
            facts.ripe_min.append(None if m is None else float(m))
            result = d.get("result")
            if isinstance(result, list):
                facts.packets.append(sum(1 for e in result if not e.get("dup")))
            else:
                facts.packets.append(1)
            facts.has_from.append(bool(d.get("from")))
            srcaddr = isinstance(result, list) and any(e.get("srcaddr") for e in result)
            facts.has_local.append(bool(d.get("src_addr")) or srcaddr)
            facts.has_size.append("size" in d)
    assert len(facts.packets) == RESULTS
    return facts


def _ingest(tmp_path_factory, atlas_file, name, *extra) -> str:
    out = str(tmp_path_factory.mktemp(name) / "out")
    assert ingest_atlas.run(["--input", str(atlas_file), "--output", out, IN_MEMORY, *extra]) == 0
    return out


@pytest.fixture(scope="session")
def ingested(atlas_ingested):
    """(output dir, rows, rejected, manifest) of the default run (--rtt min --src from): the session's
    (tests/conftest.py)."""
    out = str(atlas_ingested)
    return out, read_rows(out), read_rejected(out), load_manifest(out)


def kept_lines(rejected: pa.Table) -> np.ndarray:
    """1-based numbers of the lines that became rows (one row each with --rtt min)."""
    keep = np.ones(RESULTS + 1, dtype=bool)
    keep[0] = False
    keep[rejected.column("line_number").to_numpy()] = False
    return np.flatnonzero(keep)


def test_every_result_is_a_row_or_a_rejected_line(ingested, raw):
    out, rows, rejected, manifest = ingested
    t = manifest["totals"]
    assert t["lines"] == t["records"] == RESULTS and t["blank_lines"] == 0
    assert rows.num_rows + rejected.num_rows == RESULTS
    assert t["rows"] == t["converted"] == rows.num_rows == 488_012
    assert manifest["skipped"] == {"total": 0, "by_type": {}}  # the file holds only pings
    assert manifest["rejected"] == {"total": 49, "by_reason": {"missing_size": 1, "missing_src_addr": 48}}
    # The rejected lines, found independently: no source at all (sent = 0, no network), or no size (fw 0).
    no_source = [i + 1 for i in range(RESULTS) if not raw.has_from[i] and not raw.has_local[i]]
    no_size = [i + 1 for i in range(RESULTS) if not raw.has_size[i]]
    assert no_size == [488_031]
    reasons = dict(zip(rejected.column("line_number").to_pylist(), rejected.column("reason").to_pylist()))
    assert reasons == {**{n: "missing_src_addr" for n in no_source}, 488_031: "missing_size"}
    assert set(rejected.column("file").to_pylist()) == {manifest["inputs"][0]["path"]}
    with gzip.open(manifest["inputs"][0]["path"], "rb") as f:
        lines = f.read().split(b"\n")
    for number, text in zip(rejected.column("line_number").to_pylist(), rejected.column("raw_line").to_pylist()):
        assert text.encode() == lines[number - 1]  # the raw line, verbatim
    assert len(manifest["shards"]) == 1 and manifest["shards"][0]["rows"] == rows.num_rows
    assert sorted(os.listdir(out)) == ["_SUCCESS", "manifest.json", "part-00000-of-00001.parquet", "rejected"]


def _row_at_line(ingested, line_number: int) -> dict:
    _, rows, rejected, _ = ingested
    index = int(np.searchsorted(kept_lines(rejected), line_number))
    row = rows.slice(index, 1).to_pylist()[0]
    row["event_time"] = int(row["event_time"].timestamp())
    return row


def test_spot_check_firmware_1_record(ingested):
    # line 488032: {"addr":"62.2.16.12","avg":124.572,"dup":0,"from":"194.85.27.7","fw":1,"max":125.445,
    # "min":123.894,"msm_id":1000192,"name":"hsi.cablecom.ch","prb_id":165,"rcvd":3,"sent":3,"size":56,
    # "timestamp":1340523908,"type":"ping"}
    assert _row_at_line(ingested, 488_032) == {
        "msm_id": 1000192, "event_time": 1340523908, "src_addr": "194.85.27.7", "dst_addr": "62.2.16.12",
        "ip_version": 4, "rtt": 123.894, "size": 56, "packet_error_count": 0, "prb_id": 165,
        "from_addr": "194.85.27.7", "probe_src_addr": None, "dst_name": "hsi.cablecom.ch",
        "sent": 3, "rcvd": 3, "dup": 0, "ttl": None, "fw": 1,
    }  # fmt: skip


def test_spot_check_ipv6_record(ingested):
    # line 181: af 6, msm 2001, prb 12089, result [{"x":"*"},{"rtt":4.315385,"ttl":57},{"rtt":4.784135}]
    assert _row_at_line(ingested, 181) == {
        "msm_id": 2001, "event_time": 1556136085, "src_addr": "2a02:2b58:1:2:a2f3:c1ff:fec4:41b2",
        "dst_addr": "2001:7fd::1", "ip_version": 6, "rtt": 4.315385, "size": 20, "packet_error_count": 1,
        "prb_id": 12089, "from_addr": "2a02:2b58:1:2:a2f3:c1ff:fec4:41b2",
        "probe_src_addr": "2a02:2b58:1:2:a2f3:c1ff:fec4:41b2", "dst_name": "2001:7fd::1",
        "sent": 3, "rcvd": 2, "dup": 0, "ttl": 57, "fw": 4960,
    }  # fmt: skip


def test_spot_check_odd_layouts(ingested):
    # line 45: an {"error": ...} entry after two replies (sent 2, rcvd 2)
    row = _row_at_line(ingested, 45)
    assert (row["rtt"], row["packet_error_count"], row["dst_addr"], row["src_addr"]) == (
        25.33533, 1, "192.36.148.17", "178.252.133.210",
    )  # fmt: skip
    # line 6110: three duplicate replies and three timeouts: no reply, three errors
    row = _row_at_line(ingested, 6110)
    assert (row["rtt"], row["packet_error_count"], row["dup"], row["ip_version"]) == (-1.0, 3, 3, 6)
    # line 488038: fw 4550, `srcaddr` in an entry
    row = _row_at_line(ingested, 488_038)
    assert (row["rtt"], row["packet_error_count"], row["src_addr"], row["probe_src_addr"], row["ttl"]) == (
        27.301, 2, "80.56.151.3", "192.168.1.229", 54,
    )  # fmt: skip
    # line 488053: a key with a leading space (" proto")
    row = _row_at_line(ingested, 488_053)
    assert (row["msm_id"], row["rtt"], row["dst_addr"], row["fw"]) == (1000192, 25.672, "62.2.16.24", 4700)
    # line 488052 (a test fixture of RIPE's sagan library): "result": [], sent 3, rcvd 0, min null
    row = _row_at_line(ingested, 488_052)
    assert (row["rtt"], row["packet_error_count"], row["sent"], row["rcvd"]) == (-1.0, 0, 3, 0)


def test_rtt_is_ripes_own_min(ingested, raw):
    """RIPE's `min` (-1 when no reply) equals ours for every row, duplicates and errors included."""
    _, rows, rejected, _ = ingested
    lines = kept_lines(rejected)
    ripe = [raw.ripe_min[n - 1] for n in lines]
    assert [n for n, m in zip(lines, ripe) if m is None] == [488_052]  # "min": null, no reply
    ripe = np.array([-1.0 if m is None else m for m in ripe])
    ours = rows.column("rtt").to_numpy()
    assert np.array_equal(ours, ripe)
    assert (ours == -1.0).sum() > 1000


@pytest.mark.slow
def test_each_packet_and_local_source(tmp_path_factory, atlas_file, raw):
    """--rtt each: one row per packet; --src src_addr: the local address, rejected where there is none."""
    out = _ingest(tmp_path_factory, atlas_file, "ingest_each", "--rtt", "each", "--src", "src_addr")
    rows, rejected, manifest = read_rows(out), read_rejected(out), load_manifest(out)
    expected_rejected = {i + 1 for i in range(RESULTS) if not raw.has_local[i] or not raw.has_size[i]}
    assert set(rejected.column("line_number").to_pylist()) == expected_rejected
    assert manifest["totals"]["converted"] + rejected.num_rows == RESULTS
    packets = sum(raw.packets[i] for i in range(RESULTS) if i + 1 not in expected_rejected)
    assert rows.num_rows == manifest["totals"]["rows"] == packets
    assert manifest["totals"]["without_rows"] == 1  # line 488052: "result": [], no packet to show
    errors = rows.column("packet_error_count").to_numpy()
    rtt = rows.column("rtt").to_numpy()
    assert set(np.unique(errors)) == {0, 1} and np.array_equal(errors == 1, rtt == -1.0)
    assert rows.column("src_addr").equals(rows.column("probe_src_addr"))


# --- the round trip: ingest -> pretokenize -> ArrayRecord -> decode ----------------------------------

ODD = [  # ingestible results that the tokenizer must reject (each one row)
    {"from": "not-an-ip"},
    {"from": "fe80::1%eth0"},  # scoped: the scope would be lost
    {"af": 6},  # IPv4 addresses
    {"af": 5},
    {"size": 70000},
    {"result": [{"x": "*"}] * 300},  # 300 errors do not fit the one-byte field
    {},  # a valid one, for company
]


@functools.lru_cache(maxsize=None)
def _canonical(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _key(msm_id, seconds, src, dst, ip_version, rtt, size, errors) -> tuple:
    return (msm_id, seconds, _canonical(src), _canonical(dst), ip_version, struct.pack(">d", rtt), size, errors)


@pytest.mark.slow
def test_pretokenize_round_trip(ingested, tmp_path):
    """Every ArrayRecord measurement decodes back to an ingested row, and every ingested row that the
    pretokenizer did not reject is there: equal as multisets."""
    from array_record.python.array_record_module import ArrayRecordReader

    from beam_pipelines.pretokenize import pipeline as pretokenize
    from tokenizer import decode_measurement, split_measurements

    out, _, _, _ = ingested
    src = tmp_path / "odd"
    src.mkdir()
    base = {"af": 4, "dst_addr": "192.0.2.9", "from": "198.51.100.4", "msm_id": 7, "prb_id": 9, "size": 64,
            "timestamp": 1700000000, "type": "ping", "result": [{"rtt": 1.25}], "sent": 1, "rcvd": 1}  # fmt: skip
    (src / "odd.jsonl").write_bytes(b"\n".join(orjson.dumps({**base, **o}) for o in ODD))
    odd_out = tmp_path / "odd_out"
    assert ingest_atlas.run(["--input", str(src / "odd.jsonl"), "--output", str(odd_out), IN_MEMORY]) == 0
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    shutil.copy(os.path.join(out, "part-00000-of-00001.parquet"), parquet / "atlas.parquet")
    shutil.copy(odd_out / "part-00000-of-00001.parquet", parquet / "odd.parquet")

    dataset = tmp_path / "dataset"
    assert pretokenize.run(["--input", str(parquet / "*.parquet"), "--output", str(dataset), IN_MEMORY]) == 0

    # The ingested rows, minus what pretokenize rejected (kept under rejected/ with the row's own columns).
    ingested_rows = pa.concat_tables(pq.read_table(parquet / n) for n in ("atlas.parquet", "odd.parquet"))
    rejected_dir = dataset / "rejected"
    rejected = (
        pa.concat_tables(pq.read_table(rejected_dir / n) for n in sorted(os.listdir(rejected_dir)))
        if rejected_dir.is_dir()
        else None
    )
    assert rejected is not None and rejected.num_rows == len(ODD) - 1
    assert sorted(rejected.column("reason").to_pylist()) == sorted(
        ["malformed_src_addr", "malformed_src_addr", "ip_version_mismatch", "invalid_ip_version",
         "size_out_of_range", "packet_error_count_out_of_range"]
    )  # fmt: skip

    def raw_key(r):
        return (r["msm_id"], r["event_time"], r["src_addr"], r["dst_addr"], r["ip_version"], r["rtt"], r["size"],
                r["packet_error_count"])  # fmt: skip

    columns = atlas.COLUMNS[:8]
    expected_raw = collections.Counter(
        zip(*(ingested_rows.column(c).to_pylist() for c in columns))
    )
    expected_raw.subtract(collections.Counter(raw_key(r) for r in rejected.select(list(columns)).to_pylist()))
    assert min(expected_raw.values()) >= 0
    expected = collections.Counter()
    for (msm, when, s, d, v, rtt, size, errors), n in expected_raw.items():
        if n:
            expected[_key(msm, int(when.timestamp()), s, d, v, rtt, size, errors)] += n  # whole seconds already

    manifest = load_manifest(dataset)
    decoded = collections.Counter()
    for split in manifest["splits"].values():
        for f in split["files"]:
            reader = ArrayRecordReader(str(dataset / f["path"]))
            records = reader.read_all()
            reader.close()
            for record in records:
                for tokens in split_measurements(np.frombuffer(record, dtype="<u2")):
                    m = decode_measurement(tokens)
                    seconds = int((m["event_time"] - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)).total_seconds())
                    decoded[_key(m["msm_id"], seconds, m["src_addr"], m["dst_addr"], m["ip_version"], m["rtt"],
                                 m["size"], m["packet_error_count"])] += 1  # fmt: skip
    assert sum(decoded.values()) == 488_012 + 1
    assert decoded == expected
