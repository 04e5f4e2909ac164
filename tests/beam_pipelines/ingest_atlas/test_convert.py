"""beam_pipelines.ingest_atlas.convert: one RIPE Atlas ping result (parsed JSON) -> rows, or a rejection reason, or a skip."""

from __future__ import annotations

import math

import orjson
import pyarrow as pa
import pytest

from beam_pipelines.ingest_atlas import convert as atlas
from beam_pipelines.ingest_atlas.convert import RejectedResult, SkippedResult, convert_result, parse_and_convert, row_dicts

# Verbatim lines of the real file (shared/data/atlas/ping-results.jsonl.gz), by 1-based line number.
ERROR_ENTRY = b'{"af":4,"avg":33.0280875,"dst_addr":"192.36.148.17","dst_name":"192.36.148.17","dup":0,"from":"178.252.133.210","fw":4960,"lts":29,"max":40.720845,"min":25.33533,"msm_id":1005,"msm_name":"Ping","prb_id":12089,"proto":"ICMP","rcvd":2,"result":[{"rtt":40.720845},{"rtt":25.33533},{"error":"sendto failed: Network is unreachable"}],"sent":2,"size":20,"src_addr":"192.168.0.142","step":240,"stored_timestamp":1556139565,"timestamp":1556139469,"ttl":50,"type":"ping"}'  # line 45
IPV6 = b'{"af":6,"avg":4.54976,"dst_addr":"2001:7fd::1","dst_name":"2001:7fd::1","dup":0,"from":"2a02:2b58:1:2:a2f3:c1ff:fec4:41b2","fw":4960,"lts":48,"max":4.784135,"min":4.315385,"msm_id":2001,"msm_name":"Ping","prb_id":12089,"proto":"ICMP","rcvd":2,"result":[{"x":"*"},{"rtt":4.315385,"ttl":57},{"rtt":4.784135}],"sent":3,"size":20,"src_addr":"2a02:2b58:1:2:a2f3:c1ff:fec4:41b2","step":240,"stored_timestamp":1556136249,"timestamp":1556136085,"ttl":57,"type":"ping"}'  # line 181
SENT_ZERO = b'{"af":6,"avg":-1,"dst_addr":"2001:7fd::1","dst_name":"2001:7fd::1","dup":0,"from":"","fw":4970,"lts":2,"max":-1,"min":-1,"msm_id":2001,"msm_name":"Ping","prb_id":30677,"proto":"ICMP","rcvd":0,"result":[{"error":"connect failed: Network is unreachable"}],"sent":0,"size":0,"src_addr":"","step":240,"stored_timestamp":1556136848,"timestamp":1556136689,"type":"ping"}'  # line 4862
DUPS = b'{"af":6,"avg":-1,"dst_addr":"2001:500:2d::d","dst_name":"2001:500:2d::d","dup":3,"from":"2a0b:24c1:34:34::5355","fw":4960,"lts":24,"max":-1,"min":-1,"msm_id":2012,"msm_name":"Ping","prb_id":32717,"proto":"ICMP","rcvd":0,"result":[{"x":"*"},{"x":"*"},{"dup":1,"rtt":2726.997925,"ttl":58},{"dup":1,"rtt":1726.53816},{"dup":1,"rtt":725.29705},{"x":"*"}],"sent":3,"size":20,"src_addr":"2a0b:24c1:34:34::5355","step":240,"stored_timestamp":1556136153,"timestamp":1556136078,"type":"ping"}'  # line 6110
FW0 = b'{"avg":"58.042","dst_addr":"62.2.16.12","dup":"0","fw":0,"max":"58.272","min":"57.876","msm_id":1000192,"prb_id":677,"rcvd":"3","sent":"3","src_addr":"78.128.9.202","timestamp":1328019792,"type":"ping"}'  # line 488031
FW1 = b'{"addr":"62.2.16.12","avg":124.572,"dup":0,"from":"194.85.27.7","fw":1,"max":125.445,"min":123.894,"msm_id":1000192,"name":"hsi.cablecom.ch","prb_id":165,"rcvd":3,"sent":3,"size":56,"timestamp":1340523908,"type":"ping"}'  # line 488032
SRCADDR = b'{"af":4,"avg":27.301,"dst_addr":"62.2.16.12","dst_name":"hsi.cablecom.ch","dup":0,"from":"80.56.151.3","fw":4550,"lts":365,"max":27.301,"min":27.301,"msm_id":1000192,"msm_name":"Ping","prb_id":202,"proto":"ICMP","rcvd":1,"result":[{"srcaddr":"192.168.1.229","x":"*"},{"x":"*"},{"rtt":27.301,"ttl":54}],"sent":3,"size":20,"src_addr":"192.168.1.229","step":360,"timestamp":1378271710,"ttl":54,"type":"ping"}'  # line 488038
SPACED_KEY = b'{"af":4,"prb_id":1216,"result":[{"rtt":27.429},{"rtt":25.672},{"rtt":25.681}],"ttl":54,"avg":26.2606666667,"size":20,"from":"109.190.83.40"," proto":"ICMP","timestamp":1445025400,"dup":0,"type":"ping","sent":3,"msm_id":1000192,"fw":4700,"max":27.429,"step":360,"src_addr":"192.168.103.132","rcvd":3,"msm_name":"Ping","lts":377,"dst_name":"hsi.cablecom.ch","min":25.672,"dst_addr":"62.2.16.24"}'  # line 488053


def one(raw, **kw) -> dict:
    rows = row_dicts(parse_and_convert(raw, **kw))
    assert len(rows) == 1
    return rows[0]


def reason(raw, **kw) -> str:
    with pytest.raises(RejectedResult) as info:
        parse_and_convert(raw, **kw)
    assert info.value.reason in atlas.REASONS
    return info.value.reason


def modern(**changes) -> dict:
    obj = orjson.loads(IPV6)
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not ...}


def test_schema_is_the_seed_schema_plus_extras():
    from beam_pipelines.make_sample.synth import SCHEMA

    assert atlas.ROW_SCHEMA.names[:8] == SCHEMA.names
    assert atlas.ROW_SCHEMA.types[:8] == SCHEMA.types
    assert atlas.ROW_SCHEMA.names[8:] == [
        "prb_id", "from_addr", "probe_src_addr", "dst_name", "sent", "rcvd", "dup", "ttl", "fw",
    ]  # fmt: skip
    assert atlas.REJECTED_SCHEMA.names == ["file", "line_number", "reason", "raw_line"]


def test_ipv6_result_hand_read():
    row = one(IPV6)
    assert row == {
        "msm_id": 2001,
        "event_time": 1556136085 * 1_000_000,
        "src_addr": "2a02:2b58:1:2:a2f3:c1ff:fec4:41b2",
        "dst_addr": "2001:7fd::1",
        "ip_version": 6,
        "rtt": 4.315385,
        "size": 20,
        "packet_error_count": 1,  # the {"x": "*"} timeout
        "prb_id": 12089,
        "from_addr": "2a02:2b58:1:2:a2f3:c1ff:fec4:41b2",
        "probe_src_addr": "2a02:2b58:1:2:a2f3:c1ff:fec4:41b2",
        "dst_name": "2001:7fd::1",
        "sent": 3,
        "rcvd": 2,
        "dup": 0,
        "ttl": 57,
        "fw": 4960,
    }
    assert one(IPV6, rtt="avg")["rtt"] == (4.315385 + 4.784135) / 2


def test_ipv6_result_each_packet():
    rows = row_dicts(parse_and_convert(IPV6, rtt="each"))
    assert [(r["rtt"], r["packet_error_count"], r["ttl"]) for r in rows] == [
        (-1.0, 1, None),
        (4.315385, 0, 57),  # the entry's own ttl
        (4.784135, 0, 57),  # the result's ttl
    ]
    assert {r["msm_id"] for r in rows} == {2001} and {r["sent"] for r in rows} == {3}


def test_firmware_1_result_hand_read():
    """fw 1: `addr`/`name`, no `af`, no `src_addr`, no `result` list."""
    row = one(FW1)
    assert row == {
        "msm_id": 1000192,
        "event_time": 1340523908 * 1_000_000,
        "src_addr": "194.85.27.7",
        "dst_addr": "62.2.16.12",
        "ip_version": 4,  # from the destination's text
        "rtt": 123.894,  # `min`
        "size": 56,
        "packet_error_count": 0,  # sent - rcvd
        "prb_id": 165,
        "from_addr": "194.85.27.7",
        "probe_src_addr": None,
        "dst_name": "hsi.cablecom.ch",
        "sent": 3,
        "rcvd": 3,
        "dup": 0,
        "ttl": None,
        "fw": 1,
    }
    assert one(FW1, rtt="avg")["rtt"] == 124.572
    assert len(parse_and_convert(FW1, rtt="each")) == 1  # no per-packet data: the summary row
    assert reason(FW1, src="src_addr") == "missing_src_addr"


def test_firmware_0_numbers_as_strings():
    obj = orjson.loads(FW0)
    assert reason(FW0) == "missing_size"  # fw 0 did not report the packet size
    row = row_dicts(convert_result({**obj, "size": "48"}))[0]
    assert (row["rtt"], row["sent"], row["rcvd"], row["dup"], row["size"]) == (57.876, 3, 3, 0, 48)
    assert row["src_addr"] == row["probe_src_addr"] == "78.128.9.202" and row["from_addr"] is None
    assert row["ip_version"] == 4 and row["packet_error_count"] == 0
    assert row_dicts(convert_result({**obj, "size": 48}, rtt="avg"))[0]["rtt"] == 58.042
    lost = row_dicts(convert_result({**obj, "size": 48, "rcvd": "1", "min": "57.5"}))[0]
    assert (lost["packet_error_count"], lost["rtt"]) == (2, 57.5)
    none = row_dicts(convert_result({**obj, "size": 48, "rcvd": "0", "min": "-1"}))[0]
    assert (none["packet_error_count"], none["rtt"]) == (3, -1.0)


def test_error_entry_counts_as_an_error():
    row = one(ERROR_ENTRY)
    assert (row["rtt"], row["packet_error_count"], row["sent"], row["rcvd"]) == (25.33533, 1, 2, 2)
    each = row_dicts(parse_and_convert(ERROR_ENTRY, rtt="each"))
    assert [(r["rtt"], r["packet_error_count"]) for r in each] == [(40.720845, 0), (25.33533, 0), (-1.0, 1)]
    assert one(ERROR_ENTRY, rtt="avg")["rtt"] == math.fsum([40.720845, 25.33533]) / 2


def test_duplicate_replies_are_not_replies():
    """As RIPE's own min/avg/rcvd: dup entries answer a packet already answered (or lost)."""
    row = one(DUPS)
    assert (row["rtt"], row["packet_error_count"], row["rcvd"], row["dup"]) == (-1.0, 3, 0, 3)
    each = parse_and_convert(DUPS, rtt="each")
    assert [r[5] for r in each] == [-1.0, -1.0, -1.0]  # three packets, all lost
    obj = orjson.loads(DUPS)
    obj["result"][0] = {"rtt": 9.5}
    assert row_dicts(convert_result(obj))[0]["rtt"] == 9.5


def test_sent_zero_without_any_source_is_rejected():
    assert reason(SENT_ZERO) == "missing_src_addr"
    obj = orjson.loads(SENT_ZERO)
    row = row_dicts(convert_result({**obj, "src_addr": "2001:db8::1"}))[0]
    assert (row["src_addr"], row["from_addr"], row["rtt"], row["packet_error_count"], row["size"]) == (
        "2001:db8::1", "", -1.0, 1, 0,
    )  # fmt: skip


def test_srcaddr_in_entries_and_src_choice():
    row = one(SRCADDR)
    assert (row["src_addr"], row["probe_src_addr"], row["rtt"], row["packet_error_count"]) == (
        "80.56.151.3", "192.168.1.229", 27.301, 2,
    )  # fmt: skip
    assert one(SRCADDR, src="src_addr")["src_addr"] == "192.168.1.229"
    obj = orjson.loads(SRCADDR)
    del obj["src_addr"]  # then the first entry's srcaddr is the probe's local address
    assert row_dicts(convert_result(obj, src="src_addr"))[0]["src_addr"] == "192.168.1.229"
    obj["from"] = ""  # `from` empty: fall back to the local address
    assert row_dicts(convert_result(obj))[0]["src_addr"] == "192.168.1.229"


def test_keys_with_spaces():
    assert atlas.needs_key_cleanup(SPACED_KEY)
    assert not atlas.needs_key_cleanup(IPV6)
    row = one(SPACED_KEY)
    assert (row["msm_id"], row["dst_addr"], row["rtt"], row["ttl"]) == (1000192, "62.2.16.24", 25.672, 54)
    spaced = SPACED_KEY.replace(b'"msm_id"', b'" msm_id"').replace(b'"result"', b'"result "')
    spaced = spaced.replace(b'{"rtt":25.672}', b'{" rtt":25.672}')
    assert one(spaced) == row
    assert atlas.clean_keys({"lts": 1, " lts": 2, " a ": 3}) == {"lts": 1, "a": 3}


def test_late_entries_are_errors():
    obj = modern(result=[{"rtt": 5.0}, {"late": 1}, {"x": "*"}])
    row = row_dicts(convert_result(obj))[0]
    assert (row["rtt"], row["packet_error_count"]) == (5.0, 2)
    assert [r[5] for r in convert_result(obj, rtt="each")] == [5.0, -1.0, -1.0]


def test_numbers_as_strings_in_entries_and_fields():
    obj = modern(result=[{"rtt": "3.25"}, {"rtt": 2}], af="6", size="20", msm_id="2001", timestamp="1556136085")
    row = row_dicts(convert_result(obj))[0]
    assert (row["rtt"], row["ip_version"], row["size"], row["msm_id"], row["event_time"]) == (
        2.0, 6, 20, 2001, 1556136085 * 1_000_000,
    )  # fmt: skip
    assert isinstance(row["rtt"], float)


def test_ip_version_from_destination_when_af_is_missing():
    assert row_dicts(convert_result(modern(af=...)))[0]["ip_version"] == 6
    assert reason(orjson.dumps(modern(af=..., dst_addr="host.example"))) == "unknown_ip_version"
    assert row_dicts(convert_result(modern(af=5)))[0]["ip_version"] == 5  # kept: the pretokenizer rejects it


def test_empty_result_list():
    row = row_dicts(convert_result(modern(result=[], rcvd=0)))[0]
    assert (row["rtt"], row["packet_error_count"]) == (-1.0, 0)
    assert convert_result(modern(result=[]), rtt="each") == []


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"msm_id": ...}, "missing_msm_id"),
        ({"msm_id": "x"}, "invalid_msm_id"),
        ({"msm_id": 1.5}, "invalid_msm_id"),
        ({"msm_id": 1 << 63}, "invalid_msm_id"),
        ({"msm_id": True}, "invalid_msm_id"),
        ({"timestamp": ...}, "missing_timestamp"),
        ({"timestamp": "soon"}, "invalid_timestamp"),
        ({"timestamp": 1 << 60}, "invalid_timestamp"),
        ({"dst_addr": ...}, "missing_dst_addr"),
        ({"dst_addr": ""}, "missing_dst_addr"),
        ({"dst_addr": 17}, "invalid_dst_addr"),
        ({"from": "", "src_addr": ""}, "missing_src_addr"),
        ({"from": 5}, "invalid_src_addr"),
        ({"af": "four"}, "invalid_af"),
        ({"size": ...}, "missing_size"),
        ({"size": "big"}, "invalid_size"),
        ({"result": ..., "sent": ...}, "missing_result"),
        ({"result": {"rtt": 1.0}}, "invalid_result"),
        ({"result": [{"rtt": "fast"}]}, "invalid_rtt"),
        ({"result": ..., "min": ...}, "missing_rtt"),
        ({"prb_id": "probe"}, "invalid_field"),
        ({"ttl": 1e30}, "invalid_field"),
        ({"type": ...}, "missing_type"),
    ],
)
def test_rejection_reasons(changes, expected):
    assert reason(orjson.dumps(modern(**changes))) == expected


def test_not_json_and_not_an_object():
    assert reason(b'{"af":4,') == "invalid_json"
    assert reason(b"42") == "not_an_object"
    assert reason(b'"ping"') == "not_an_object"


def test_other_result_types_are_skipped():
    with pytest.raises(SkippedResult) as info:
        parse_and_convert(b'{"type":"traceroute","msm_id":5001,"result":[]}')
    assert info.value.type == "traceroute"
    with pytest.raises(SkippedResult):
        convert_result({"type": 3})


def test_rows_to_batch_types_and_empty():
    batch = atlas.rows_to_batch(parse_and_convert(IPV6, rtt="each") + parse_and_convert(FW1))
    assert batch.schema.equals(atlas.ROW_SCHEMA)
    assert batch.num_rows == 4
    assert batch.column("event_time")[0].as_py().isoformat() == "2019-04-24T20:01:25+00:00"
    assert batch.column("ttl").null_count == 2
    assert atlas.rows_to_batch([]).num_rows == 0


def test_raw_text_escapes_and_cuts():
    assert atlas.raw_text(b"ok \xff") == "ok \\xff"
    assert len(atlas.raw_text(b"x" * (atlas.RAW_LIMIT + 10))) == atlas.RAW_LIMIT
    assert atlas.raw_text("é") == "é"
    assert pa.array([atlas.raw_text(b"\xc3")]).type == pa.string()
