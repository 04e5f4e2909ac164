"""Vocabulary, per-row encoding, decoding and rejection of single measurements (tokenizer scheme v1).

Expected tokens are built here by hand from struct/ipaddress/calendar, never from the code under test.
"""

from __future__ import annotations

import calendar
import datetime as dt
import ipaddress
import math
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenizer
from tokenizer import vocab
from tokenizer.errors import REASON_FIELD, REASONS, DecodeError, InvalidMeasurement
from tokenizer.measurement import decode_measurement, encode_measurement, epoch_seconds, split_measurements
from tests.tokenizer.rows import SEED_TS, UTC, seed_row





def b(raw: bytes) -> list[int]:
    """Byte tokens of raw bytes, by the documented rule: byte b is id 10 + b."""
    return [10 + x for x in raw]


def expected_blocks(row: dict) -> dict[int, list[int]]:
    """The seven blocks of ``row`` keyed by role id, computed independently of the tokenizer."""
    src = ipaddress.ip_address(row["src_addr"])
    dst = ipaddress.ip_address(row["dst_addr"])
    family = 3 if src.version == 4 else 4
    t = row["event_time"]
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    seconds = calendar.timegm(t.utctimetuple())  # whole seconds, microseconds dropped: a floor
    return {
        1: [1, family, *b(src.packed)],
        2: [2, family, *b(dst.packed)],
        5: [5, *b(struct.pack(">d", row["rtt"]))],
        6: [6, *b(struct.pack(">H", row["size"]))],
        7: [7, 10 + row["packet_error_count"]],
        8: [8, *b(struct.pack(">q", seconds))],
        9: [9, *b(struct.pack(">q", row["msm_id"]))],
    }


def split_blocks(tokens: list[int]) -> list[list[int]]:
    """Cut tokens[1:] into blocks using only the documented layout (role, [family], bytes)."""
    sizes = {5: 9, 6: 3, 7: 2, 8: 9, 9: 9}
    out, i = [], 1
    while i < len(tokens):
        role = tokens[i]
        if role in (1, 2):
            n = 2 + (4 if tokens[i + 1] == 3 else 16)
        else:
            n = sizes[role]
        out.append(tokens[i : i + n])
        i += n
    return out


def assert_layout(tokens: list[int], row: dict) -> None:
    assert tokens[0] == 0
    assert tokens.count(0) == 1
    blocks = split_blocks(tokens)
    exp = expected_blocks(row)
    assert sorted(blk[0] for blk in blocks) == sorted(exp)  # each role exactly once
    for blk in blocks:
        assert blk == exp[blk[0]]


# --- vocabulary ---------------------------------------------------------------------------------


def test_vocabulary_ids():
    roles = [
        vocab.MEASUREMENT_START,
        vocab.SRC_IP_START,
        vocab.DEST_IP_START,
        vocab.IPV4_START,
        vocab.IPV6_START,
        vocab.RTT_START,
        vocab.SIZE_START,
        vocab.ERROR_COUNT_START,
        vocab.TIMESTAMP_START,
        vocab.MSM_ID_START,
    ]
    assert roles == list(range(10))
    assert vocab.ROLE_NAMES[0] == "MeasurementStart" and vocab.ROLE_NAMES[9] == "MsmIdStart"
    assert vocab.BYTE_OFFSET == 10
    assert tokenizer.PAD == 266
    assert tokenizer.VOCAB_SIZE == 267
    assert tokenizer.IPV4_LENGTH == 45 and tokenizer.measurement_length(4) == 45
    assert tokenizer.IPV6_LENGTH == 69 and tokenizer.measurement_length(6) == 69
    assert (tokenizer.TOKENIZER_NAME, tokenizer.TOKENIZER_VERSION) == ("v1", 1)
    assert vocab.NUM_ORDERS == 5040 == math.factorial(7)


# --- the seed example ---------------------------------------------------------------------------


def test_seed_example_ipv4_45_tokens():
    tokens = encode_measurement(seed_row())
    assert len(tokens) == 45
    assert tokens[0] == 0
    assert all(isinstance(t, int) for t in tokens)
    assert all(0 <= t < 266 for t in tokens)  # never PAD inside a measurement

    def contains(block):
        return any(tokens[i : i + len(block)] == block for i in range(1, len(tokens)))

    assert contains([1, 3, 10 + 192, 10 + 0, 10 + 2, 10 + 1])
    assert contains([2, 3, 10 + 8, 10 + 8, 10 + 8, 10 + 8])
    assert contains([5] + [x + 10 for x in struct.pack(">d", 42.5)])
    assert contains([5, 10 + 0x40, 10 + 0x45, 10 + 0x40, 10, 10, 10, 10, 10])  # 42.5 = 0x4045400000000000
    assert contains([6, 10 + 0, 10 + 64])
    assert contains([7, 10])
    assert SEED_TS == calendar.timegm((2025, 6, 24, 12, 0, 0))
    assert contains([8] + [x + 10 for x in SEED_TS.to_bytes(8, "big", signed=True)])
    assert contains([9] + [x + 10 for x in (12345).to_bytes(8, "big", signed=True)])
    assert_layout(tokens, seed_row())


def test_seed_example_ipv6_69_tokens():
    row = seed_row(src_addr="2001:db8::1", dst_addr="2001:4860:4860::8888", ip_version=6)
    tokens = encode_measurement(row)
    assert len(tokens) == 69
    src_bytes = [0x20, 0x01, 0x0D, 0xB8] + [0] * 11 + [1]
    i = tokens.index(1)
    assert tokens[i : i + 18] == [1, 4, *[10 + x for x in src_bytes]]
    assert_layout(tokens, row)


def test_role_ids_never_appear_as_bytes():
    # The extreme byte values: 0x00 and 0xff everywhere.
    row = seed_row(
        msm_id=-1,
        event_time=dt.datetime(1970, 1, 1, tzinfo=UTC),
        src_addr="255.255.255.255",
        dst_addr="0.0.0.0",
        rtt=float.fromhex("0x1.fffffffffffffp+1023"),
        size=65535,
        packet_error_count=255,
    )
    tokens = encode_measurement(row)
    assert min(tokens[1:]) >= 1 and max(tokens) == 265
    assert_layout(tokens, row)
    # Exactly 9 tokens below 10 besides MeasurementStart: 7 roles and 2 family tokens.
    assert sum(1 for t in tokens[1:] if t < 10) == 9


# --- round trips --------------------------------------------------------------------------------


def canonical(row: dict) -> dict:
    t = row["event_time"]
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    seconds = calendar.timegm(t.utctimetuple())
    return {
        "msm_id": row["msm_id"],
        "event_time": dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=seconds),
        "src_addr": str(ipaddress.ip_address(row["src_addr"])),
        "dst_addr": str(ipaddress.ip_address(row["dst_addr"])),
        "ip_version": row["ip_version"],
        "rtt": row["rtt"],
        "size": row["size"],
        "packet_error_count": row["packet_error_count"],
    }


def bits(x: float) -> bytes:
    return struct.pack(">d", x)


@pytest.mark.parametrize(
    "rtt",
    [42.5, -1.0, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072009e-308, sys.float_info.max, -sys.float_info.max,
     1e300, 0.1, 1 / 3],
)
def test_round_trip_rtt_bit_exact(rtt):
    row = seed_row(rtt=rtt)
    out = decode_measurement(encode_measurement(row))
    assert bits(out["rtt"]) == bits(rtt)
    assert out == canonical(row)


@pytest.mark.parametrize(
    "text",
    ["2001:DB8:0:0:0:0:0:1", "2001:0db8::0001", "::ffff:1.2.3.4", "::", "::1", "FE80::1", "2001:db8:0:0:1:0:0:1"],
)
def test_round_trip_ipv6_canonical_text(text):
    row = seed_row(src_addr=text, dst_addr="2001:4860:4860:0:0:0:0:8888", ip_version=6)
    out = decode_measurement(encode_measurement(row))
    assert out["src_addr"] == str(ipaddress.ip_address(text))
    assert out["dst_addr"] == "2001:4860:4860::8888"
    assert out == canonical(row)


@pytest.mark.parametrize(
    ("when", "seconds"),
    [
        (dt.datetime(2025, 6, 24, 12, 0, 0, 999999, tzinfo=UTC), SEED_TS),
        (dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 0),
        (dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), -1),  # floor, not truncation toward 0
        (dt.datetime(1969, 12, 31, 23, 59, 58, 1, tzinfo=UTC), -2),
        (dt.datetime(1900, 1, 1, 0, 0, 0, 250000, tzinfo=UTC), -2208988800),
        (dt.datetime(2025, 6, 24, 14, 0, 0, 7, tzinfo=dt.timezone(dt.timedelta(hours=2))), SEED_TS),
        (dt.datetime(2025, 6, 24, 12, 0, 0, 7), SEED_TS),  # naive is UTC
    ],
)
def test_timestamps_floor_to_utc_seconds(when, seconds):
    assert epoch_seconds(when) == seconds
    out = decode_measurement(encode_measurement(seed_row(event_time=when)))
    assert out["event_time"] == dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=seconds)
    assert out["event_time"].tzinfo is not None and out["event_time"].utcoffset() == dt.timedelta(0)


def test_epoch_seconds_numpy_datetime64_floors():
    assert epoch_seconds(np.datetime64(-1500, "ms")) == -2
    assert epoch_seconds(np.datetime64(-1, "ns")) == -1
    assert epoch_seconds(np.datetime64(SEED_TS * 10**9 + 999_999_999, "ns")) == SEED_TS
    with pytest.raises(TypeError):
        epoch_seconds("2025-06-24")


ipv4 = st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))
ipv6_text = st.integers(0, 2**128 - 1).flatmap(
    lambda v: st.sampled_from(
        [
            str(ipaddress.IPv6Address(v)),
            ipaddress.IPv6Address(v).exploded,
            ipaddress.IPv6Address(v).exploded.upper(),
        ]
    )
)
timestamps = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)
).flatmap(
    lambda d: st.sampled_from(
        [d, d.replace(tzinfo=UTC), d.replace(tzinfo=dt.timezone(dt.timedelta(hours=-7, minutes=-30)))]
    )
)


@st.composite
def valid_rows(draw):
    family = draw(st.sampled_from([4, 6]))
    addr = ipv4 if family == 4 else ipv6_text
    return {
        "msm_id": draw(st.integers(-(2**63), 2**63 - 1)),
        "event_time": draw(timestamps),
        "src_addr": draw(addr),
        "dst_addr": draw(addr),
        "ip_version": family,
        "rtt": draw(st.one_of(st.just(-1.0), st.floats(allow_nan=False, allow_infinity=False))),
        "size": draw(st.integers(0, 65535)),
        "packet_error_count": draw(st.integers(0, 255)),
    }


@settings(max_examples=60, deadline=None)
@given(valid_rows())
def test_round_trip_property(row):
    tokens = encode_measurement(row)
    assert len(tokens) == (45 if row["ip_version"] == 4 else 69)
    assert_layout(tokens, row)
    out = decode_measurement(tokens)
    assert bits(out["rtt"]) == bits(row["rtt"])
    assert out == canonical(row)
    assert encode_measurement(row) == tokens  # same row, same tokens


# --- rejection reasons (per row) ----------------------------------------------------------------

# One bad row per reason; each is otherwise valid.
BAD_ROWS = {
    "null_msm_id": [seed_row(msm_id=None)],
    "msm_id_out_of_range": [seed_row(msm_id=2**63), seed_row(msm_id=-(2**63) - 1), seed_row(msm_id=2**64 - 1)],
    "null_event_time": [seed_row(event_time=None)],
    "null_src_addr": [seed_row(src_addr=None)],
    "empty_src_addr": [seed_row(src_addr="")],
    "malformed_src_addr": [
        seed_row(src_addr="not-an-address"),
        seed_row(src_addr="256.1.1.1"),
        seed_row(src_addr="1.2.3"),
        seed_row(src_addr="fe80::1%eth0", ip_version=6, dst_addr="::1"),
        seed_row(src_addr=" 192.0.2.1"),
        seed_row(src_addr="192.0.2.0/24"),
    ],
    "null_dst_addr": [seed_row(dst_addr=None)],
    "empty_dst_addr": [seed_row(dst_addr="")],
    "malformed_dst_addr": [
        seed_row(dst_addr="8.8.8.8.8"),
        seed_row(dst_addr="fe80::1%eth0", ip_version=6, src_addr="::1"),
        seed_row(dst_addr="2001:db8:::1", ip_version=6, src_addr="::1"),
    ],
    "null_ip_version": [seed_row(ip_version=None)],
    "invalid_ip_version": [seed_row(ip_version=5), seed_row(ip_version=0), seed_row(ip_version=-4),
                           seed_row(ip_version=4.0)],
    "ip_version_mismatch": [
        seed_row(ip_version=6),
        seed_row(dst_addr="2001:db8::1"),
        seed_row(src_addr="::ffff:192.0.2.1"),  # IPv4-mapped IPv6 is IPv6
    ],
    "null_rtt": [seed_row(rtt=None)],
    "non_finite_rtt": [seed_row(rtt=math.nan), seed_row(rtt=math.inf), seed_row(rtt=-math.inf)],
    "null_size": [seed_row(size=None)],
    "non_integral_size": [seed_row(size=64.5), seed_row(size=math.nan), seed_row(size=math.inf)],
    "size_out_of_range": [seed_row(size=65536), seed_row(size=-1), seed_row(size=-1.0), seed_row(size=1e300)],
    "null_packet_error_count": [seed_row(packet_error_count=None)],
    "non_integral_packet_error_count": [seed_row(packet_error_count=0.5)],
    "packet_error_count_out_of_range": [seed_row(packet_error_count=256), seed_row(packet_error_count=-1)],
}

COLUMN_OF_REASON = {
    "null_msm_id": "msm_id",
    "msm_id_out_of_range": "msm_id",
    "null_event_time": "event_time",
    "null_src_addr": "src_addr",
    "empty_src_addr": "src_addr",
    "malformed_src_addr": "src_addr",
    "null_dst_addr": "dst_addr",
    "empty_dst_addr": "dst_addr",
    "malformed_dst_addr": "dst_addr",
    "null_ip_version": "ip_version",
    "invalid_ip_version": "ip_version",
    "ip_version_mismatch": "ip_version",
    "null_rtt": "rtt",
    "non_finite_rtt": "rtt",
    "null_size": "size",
    "non_integral_size": "size",
    "size_out_of_range": "size",
    "null_packet_error_count": "packet_error_count",
    "non_integral_packet_error_count": "packet_error_count",
    "packet_error_count_out_of_range": "packet_error_count",
}


def test_every_reason_has_a_case():
    assert set(BAD_ROWS) == set(REASONS) == set(COLUMN_OF_REASON)
    assert len(REASONS) == len(set(REASONS)) == 20
    assert REASON_FIELD == COLUMN_OF_REASON


@pytest.mark.parametrize(
    ("reason", "row"), [(reason, row) for reason, rows in BAD_ROWS.items() for row in rows]
)
def test_rejection_per_row(reason, row):
    with pytest.raises(ValueError) as info:
        encode_measurement(row)
    err = info.value
    assert isinstance(err, InvalidMeasurement)
    assert err.reason == reason
    assert err.field == COLUMN_OF_REASON[reason]
    assert COLUMN_OF_REASON[reason] in str(err) and reason in str(err)


@pytest.mark.parametrize(
    "row",
    [
        seed_row(rtt=-1.0),  # a failed ping is a valid measurement
        seed_row(size=0),
        seed_row(size=65535),
        seed_row(size=64.0),  # an integral float is accepted
        seed_row(size=np.float32(64.0)),
        seed_row(packet_error_count=255),
        seed_row(packet_error_count=np.uint8(3)),
        seed_row(msm_id=2**63 - 1),
        seed_row(msm_id=-(2**63)),
        seed_row(msm_id=np.uint64(2**63 - 1)),
        seed_row(rtt=np.float32(0.1)),
        seed_row(ip_version=np.int8(4)),
    ],
)
def test_edge_values_accepted(row):
    tokens = encode_measurement(row)
    assert len(tokens) == 45
    plain = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
    plain["size"] = int(plain["size"])
    plain["packet_error_count"] = int(plain["packet_error_count"])
    assert_layout(tokens, plain)


def test_float32_rtt_widened_exactly():
    tokens = encode_measurement(seed_row(rtt=np.float32(0.1)))
    widened = struct.unpack(">f", struct.pack(">f", 0.1))[0]  # float32 0.1 as a Python float, exactly
    assert widened != 0.1
    rtt_block = next(blk for blk in split_blocks(tokens) if blk[0] == 5)
    assert rtt_block == [5, *b(struct.pack(">d", widened))]


def test_first_failing_check_wins():
    row = seed_row(msm_id=None, src_addr="", rtt=math.nan, size=-3)
    with pytest.raises(InvalidMeasurement) as info:
        encode_measurement(row)
    assert info.value.reason == "null_msm_id"
    row = seed_row(src_addr="", dst_addr=None)
    with pytest.raises(InvalidMeasurement) as info:
        encode_measurement(row)
    assert info.value.reason == "empty_src_addr"


# --- decoding errors and record splitting -------------------------------------------------------


@pytest.mark.parametrize(
    "tokens",
    [
        [],
        [1, 3, 10, 10, 10, 10],  # does not start with MeasurementStart
        lambda t: t[:-1],  # truncated
        lambda t: t + [266],  # PAD inside a measurement
        lambda t: t[:1] + t[1:][::-1],  # scrambled
        lambda t: t + [5, *b(struct.pack(">d", 1.0))],  # a repeated rtt block
        lambda t: t + [1, 3, 10, 10, 10, 10],  # a repeated source block
        lambda t: [0],  # no fields
    ],
)
def test_decode_rejects_malformed(tokens):
    good = encode_measurement(seed_row())
    seq = tokens(good) if callable(tokens) else tokens
    with pytest.raises(DecodeError):
        decode_measurement(seq)


def test_decode_rejects_mixed_families():
    tokens = encode_measurement(seed_row())
    blocks = split_blocks(tokens)
    dst = next(i for i, blk in enumerate(blocks) if blk[0] == 2)
    blocks[dst] = [2, 4, *b(ipaddress.ip_address("::1").packed)]
    with pytest.raises(DecodeError):
        decode_measurement([0, *[t for blk in blocks for t in blk]])


def test_split_measurements():
    rows = [seed_row(), seed_row(src_addr="::1", dst_addr="::2", ip_version=6), seed_row(msm_id=7)]
    streams = [encode_measurement(r) for r in rows]
    record = np.array([t for s in streams for t in s] + [266] * 20, dtype=np.uint16)
    parts = split_measurements(record)
    assert [p.tolist() for p in parts] == streams
    assert [decode_measurement(p) for p in parts] == [canonical(r) for r in rows]
    assert split_measurements(np.full(8, 266, dtype=np.uint16)) == []
    with pytest.raises(DecodeError):
        split_measurements(np.array([*streams[0], 266, *streams[1]], dtype=np.uint16))  # PAD not a suffix
    with pytest.raises(DecodeError):
        split_measurements(np.array(streams[0][1:], dtype=np.uint16))  # does not start with 0
