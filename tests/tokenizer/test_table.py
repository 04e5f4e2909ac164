"""The vectorized encoder: same tokens as the per-row encoder, row for row; schema, units, time zones, widths."""

from __future__ import annotations

import calendar
import datetime as dt
import ipaddress
import math
import os
import struct
import time

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenizer.errors import REASONS, InvalidMeasurement, SchemaError
from tokenizer.measurement import encode_measurement
from tokenizer.table import EncodedTable, check_schema, encode_table
from tests.tokenizer.rows import SEED_TS, seed_row

COLUMNS = ("msm_id", "event_time", "src_addr", "dst_addr", "ip_version", "rtt", "size", "packet_error_count")
SEED_TYPES = {
    "msm_id": pa.int64(),
    "event_time": pa.timestamp("us", tz="UTC"),
    "src_addr": pa.string(),
    "dst_addr": pa.string(),
    "ip_version": pa.int64(),
    "rtt": pa.float64(),
    "size": pa.int64(),
    "packet_error_count": pa.int64(),
}




def make_table(rows: list[dict], **types) -> pa.Table:
    schema = pa.schema([(c, types.get(c, SEED_TYPES[c])) for c in COLUMNS])
    return pa.Table.from_pylist(rows, schema=schema)


def tokens_of(enc: EncodedTable, row: int) -> list[int]:
    pos = int(np.flatnonzero(enc.accepted == row)[0])
    return enc.tokens[enc.offsets[pos] : enc.offsets[pos + 1]].tolist()


def rejected_reasons(enc: EncodedTable) -> dict[int, str]:
    return dict(zip(enc.rejected.tolist(), enc.reasons.tolist()))


def assert_matches_per_row(table: pa.Table, rows: list[dict] | None = None) -> EncodedTable:
    """For every row: both encoders reject with the same reason, or both give identical tokens."""
    enc = encode_table(table)
    rows = table.to_pylist() if rows is None else rows
    assert enc.num_rows == len(rows) == table.num_rows
    assert sorted(enc.accepted.tolist() + enc.rejected.tolist()) == list(range(len(rows)))
    assert np.all(np.diff(enc.accepted) > 0) and np.all(np.diff(enc.rejected) > 0)
    assert enc.offsets[0] == 0 and enc.offsets[-1] == len(enc.tokens)
    assert enc.tokens.dtype == np.uint16
    reasons = rejected_reasons(enc)
    for i, row in enumerate(rows):
        try:
            expected = encode_measurement(row)
        except InvalidMeasurement as err:
            assert reasons.get(i) == err.reason, (i, row)
            continue
        assert i not in reasons, (i, row, reasons.get(i))
        assert tokens_of(enc, i) == expected, (i, row)
    return enc


# --- the seed example and the result's side arrays ----------------------------------------------


def test_seed_example_vectorized():
    rows = [
        seed_row(),
        seed_row(src_addr="2001:db8::1", dst_addr="2001:4860:4860::8888", ip_version=6),
        seed_row(src_addr="", rtt=-1.0),
    ]
    enc = assert_matches_per_row(make_table(rows))
    assert enc.accepted.tolist() == [0, 1]
    assert enc.offsets.tolist() == [0, 45, 45 + 69]
    assert enc.rejected.tolist() == [2] and enc.reasons.tolist() == ["empty_src_addr"]
    assert enc.reason_counts() == {"empty_src_addr": 1}
    assert enc.timestamp.tolist() == [SEED_TS, SEED_TS]
    assert enc.ip_version.tolist() == [4, 6]
    v6 = int(ipaddress.ip_address("2001:db8::1"))
    assert enc.src_words.tolist() == [[0, 0xC0000201], [v6 >> 64, v6 & (2**64 - 1)]]


def test_record_batch_and_chunked_input_match():
    rows = [seed_row(msm_id=i, src_addr=f"10.0.{i % 7}.{i % 250}", rtt=float(i)) for i in range(300)]
    rows[17]["dst_addr"] = None
    table = make_table(rows)
    whole = encode_table(table)
    chunked = encode_table(pa.concat_tables([table.slice(0, 100), table.slice(100, 50), table.slice(150)]))
    batch = encode_table(table.to_batches()[0])
    for other in (chunked, batch):
        assert np.array_equal(other.tokens, whole.tokens)
        assert np.array_equal(other.offsets, whole.offsets)
        assert np.array_equal(other.rejected, whole.rejected)
    assert whole.rejected.tolist() == [17]


def test_empty_table():
    enc = encode_table(make_table([]))
    assert enc.num_rows == 0 and len(enc.tokens) == 0 and enc.offsets.tolist() == [0]
    assert enc.reason_counts() == {}


def test_dictionary_and_large_string_addresses():
    rows = [seed_row(src_addr=a) for a in ["192.0.2.1", "192.0.2.2", "192.0.2.1", "bad", None]]
    plain = encode_table(make_table(rows))
    for t in (pa.large_string(), pa.dictionary(pa.int32(), pa.string())):
        other = assert_matches_per_row(make_table(rows, src_addr=t, dst_addr=t))
        assert np.array_equal(other.tokens, plain.tokens)
        assert rejected_reasons(other) == {3: "malformed_src_addr", 4: "null_src_addr"}


def test_extra_columns_ignored():
    table = make_table([seed_row()]).append_column("note", pa.array(["x"]))
    assert tokens_of(encode_table(table), 0) == encode_measurement(seed_row())


# --- property: vectorized == per-row ------------------------------------------------------------

V4_POOL = ["192.0.2.1", "8.8.8.8", "10.0.0.1", "0.0.0.0", "255.255.255.255"]
V6_POOL = [
    "2001:db8::1",
    "2001:DB8:0:0:0:0:0:1",  # same address, other text
    "2001:0db8:0000:0000:0000:0000:0000:0001",
    "::ffff:1.2.3.4",  # IPv4-mapped: an IPv6 address
    "::",
    "fe80::1",
]
DIRTY_ADDRESSES = [None, "", "not-an-address", "fe80::1%eth0", "256.0.0.1", "1.2.3", " 8.8.8.8", "2001:db8:::1"]

v4_random = st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))
v6_random = st.integers(0, 2**128 - 1).flatmap(
    lambda v: st.sampled_from([str(ipaddress.IPv6Address(v)), ipaddress.IPv6Address(v).exploded.upper()])
)


def address(family: int):
    pool, rnd = (V4_POOL, v4_random) if family == 4 else (V6_POOL, v6_random)
    return st.one_of(st.sampled_from(pool), rnd)


@st.composite
def tables(draw):
    """A table of clean and dirty rows over a randomly drawn (but valid) schema."""
    msm_type = draw(st.sampled_from([pa.int64(), pa.uint64(), pa.int32()]))
    unit = draw(st.sampled_from(["s", "ms", "us"]))
    tz = draw(st.sampled_from([None, "UTC", "Europe/Paris"]))
    ver_type = draw(st.sampled_from([pa.int64(), pa.int8(), pa.uint8()]))
    rtt_type = draw(st.sampled_from([pa.float64(), pa.float32()]))
    size_type = draw(st.sampled_from([pa.int64(), pa.float64(), pa.uint16(), pa.int32()]))
    err_type = draw(st.sampled_from([pa.int64(), pa.float32(), pa.uint8(), pa.int16()]))
    dirty_share = draw(st.sampled_from([0.0, 0.2, 0.6]))
    per_unit = {"s": 1, "ms": 10**3, "us": 10**6}[unit]

    fields = ["msm_id", "event_time", "src_addr", "dst_addr", "family", "ip_version", "rtt", "size", "errors"]
    bad: set[str] = set()  # the fields made dirty in the current row (usually one, sometimes two)

    def dirty(field: str) -> bool:
        return field in bad

    def integer(field: str, t: pa.DataType, clean: st.SearchStrategy):
        if not dirty(field):
            return draw(clean)
        if pa.types.is_floating(t):
            return draw(st.one_of(st.none(), st.sampled_from([0.5, -1.0, 1e6, math.nan, math.inf, -0.0, 300.0]),
                                  st.floats(-1e6, 1e6)))
        info = np.iinfo(np.dtype(str(t)))
        edges = [v for v in (-1, 256, 65536, int(info.min), int(info.max)) if info.min <= v <= info.max]
        return draw(st.one_of(st.none(), st.sampled_from(edges), st.integers(int(info.min), int(info.max))))

    rows = []
    for _ in range(draw(st.integers(1, 25))):
        is_dirty = draw(st.floats(0, 1)) < dirty_share
        bad = set(draw(st.lists(st.sampled_from(fields), min_size=1, max_size=2))) if is_dirty else set()
        family = draw(st.sampled_from([4, 6]))
        src = draw(st.sampled_from(DIRTY_ADDRESSES)) if dirty("src_addr") else draw(address(family))
        # Mixed families inside one row are dirty too (ip_version_mismatch).
        dst_family = 10 - family if dirty("family") else family
        dst = draw(st.sampled_from(DIRTY_ADDRESSES)) if dirty("dst_addr") else draw(address(dst_family))
        if dirty("ip_version"):
            ver = draw(st.one_of(st.none(), st.sampled_from([0, 5, 4, 6, 255 if ver_type == pa.uint8() else -4])))
        else:
            ver = family
        if msm_type == pa.uint64():
            too_big = st.one_of(st.integers(2**63, 2**64 - 1), st.none())
            msm = draw(too_big if dirty("msm_id") else st.integers(0, 2**63 - 1))
        else:
            info = np.iinfo(np.dtype(str(msm_type)))
            msm = None if dirty("msm_id") else draw(st.integers(int(info.min), int(info.max)))
        # Timestamps, including negative ones with a sub-second part (floor, not truncation).
        ticks = draw(st.integers(-(2**32) * per_unit, 2**33 * per_unit))
        when = None if dirty("event_time") else ticks
        if dirty("rtt"):
            rtt = draw(st.one_of(st.none(), st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -0.0])))
        else:
            rtt = draw(st.one_of(st.just(-1.0), st.floats(allow_nan=False, allow_infinity=False, width=32),
                                 st.floats(0, 1e4)))
            if rtt_type == pa.float32() and not math.isfinite(float(np.float32(rtt))):
                rtt = 1.0
        size = integer("size", size_type, st.sampled_from([64, 0, 48, 1000, 65535 if size_type != pa.int8() else 100]))
        errors = integer("errors", err_type, st.integers(0, 127))
        rows.append(
            {"msm_id": msm, "event_time": when, "src_addr": src, "dst_addr": dst, "ip_version": ver, "rtt": rtt,
             "size": size, "packet_error_count": errors}
        )
    arrays = {
        "msm_id": pa.array([r["msm_id"] for r in rows], msm_type),
        "event_time": pa.array([r["event_time"] for r in rows], pa.int64()).cast(pa.timestamp(unit, tz=tz)),
        "src_addr": pa.array([r["src_addr"] for r in rows], pa.string()),
        "dst_addr": pa.array([r["dst_addr"] for r in rows], pa.string()),
        "ip_version": pa.array([r["ip_version"] for r in rows], ver_type),
        "rtt": pa.array([r["rtt"] for r in rows], rtt_type, from_pandas=False),
        "size": pa.array([r["size"] for r in rows], size_type),
        "packet_error_count": pa.array([r["packet_error_count"] for r in rows], err_type),
    }
    return pa.table(arrays)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tables())
def test_vectorized_equals_per_row(table):
    assert_matches_per_row(table)


def _as_dictionaries(table: pa.Table) -> pa.Table:
    """``table`` with both address columns dictionary-encoded, as a Parquet reader with ``read_dictionary``
    gives them (each column its own dictionary: an address may be in both)."""
    for name in ("src_addr", "dst_addr"):
        col = table.column(name).combine_chunks().dictionary_encode()
        table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tables())
def test_dictionary_address_columns_equal_per_row(table):
    """The dictionaries' entries are parsed instead of the rows' strings: the same tokens and reasons."""
    dictionaries = _as_dictionaries(table)
    assert pa.types.is_dictionary(dictionaries.schema.field("src_addr").type)
    plain = encode_table(table)
    enc = assert_matches_per_row(dictionaries, table.to_pylist())
    assert np.array_equal(enc.tokens, plain.tokens) and np.array_equal(enc.src_words, plain.src_words)


def test_dictionary_address_columns_of_every_shape():
    """Shared, null and unused dictionary entries; null indices; a dictionary larger than the rows (a slice
    of a row group's column: the rows' own strings are parsed then); one column plain, the other not."""
    addresses = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "", "bad", "2001:db8::1"]
    rows = [seed_row(src_addr=addresses[i % 3], dst_addr=addresses[(i + 1) % 3]) for i in range(12)]
    rows += [seed_row(src_addr="", dst_addr="192.0.2.1"), seed_row(src_addr="bad"), seed_row(dst_addr=None)]
    rows.append(seed_row(src_addr="2001:db8::1", dst_addr="2001:db8::1", ip_version=6))
    table = make_table(rows)
    # Null as a dictionary value and as an index; entries no row uses.
    used = sorted({r[c] for r in rows for c in ("src_addr", "dst_addr") if r[c] is not None})
    values = pa.array([None, *used, "203.0.113.9", "2001:db8::2"], pa.string())
    lookup = {a: i + 1 for i, a in enumerate(used)}

    def dictionary_column(name):
        idx = [None if r[name] is None else (0 if i % 2 and r[name] == "" else lookup[r[name]]) for i, r in enumerate(rows)]
        return pa.DictionaryArray.from_arrays(pa.array(idx, pa.int16()), values)

    cases = {
        "own dictionaries": _as_dictionaries(table),
        "one large shared dictionary": pa.table(
            {c: dictionary_column(c) if c in ("src_addr", "dst_addr") else table.column(c) for c in COLUMNS}
        ),
        "src only": table.set_column(2, "src_addr", table.column("src_addr").combine_chunks().dictionary_encode()),
    }
    for name, case in cases.items():
        got = assert_matches_per_row(case)
        assert rejected_reasons(got) == rejected_reasons(encode_table(pa.table(case.to_pydict()))), name
    # A slice keeps the whole dictionary: 2 rows, 11 entries.
    sliced = cases["one large shared dictionary"].slice(3, 2)
    assert len(sliced.column("src_addr").chunk(0).dictionary) > sliced.num_rows
    assert_matches_per_row(sliced)


def test_vectorized_equals_per_row_on_synthetic_data():
    from beam_pipelines.make_sample import synth

    table = synth.generate(3000, seed=3)
    enc = assert_matches_per_row(table)
    assert 0 < len(enc.rejected) < 0.02 * table.num_rows  # synth's dirty rows


def test_placement_across_chunks_equals_one_chunk(monkeypatch):
    """Rows placed in many small chunks (both families, chunk edges everywhere) give the same tokens."""
    from beam_pipelines.make_sample import synth
    from tokenizer import table as table_module

    table = synth.generate(3000, seed=4)
    whole = encode_table(table)
    assert len(whole.accepted) > 2 * 7 and set(whole.ip_version.tolist()) == {4, 6}
    monkeypatch.setattr(table_module, "_CHUNK_ROWS", 7)
    chunked = encode_table(table)
    assert np.array_equal(chunked.tokens, whole.tokens) and np.array_equal(chunked.offsets, whole.offsets)
    assert_matches_per_row(table.slice(0, 500))  # and, with small chunks, still the per-row tokens


# --- rejection reasons (vectorized) -------------------------------------------------------------

# (reason, row, column types needed to express the bad value)
BAD = [
    ("null_msm_id", seed_row(msm_id=None), {}),
    ("msm_id_out_of_range", seed_row(msm_id=2**63), {"msm_id": pa.uint64()}),
    ("msm_id_out_of_range", seed_row(msm_id=2**64 - 1), {"msm_id": pa.uint64()}),
    ("null_event_time", seed_row(event_time=None), {}),
    ("null_src_addr", seed_row(src_addr=None), {}),
    ("empty_src_addr", seed_row(src_addr=""), {}),
    ("malformed_src_addr", seed_row(src_addr="not-an-address"), {}),
    ("malformed_src_addr", seed_row(src_addr="fe80::1%eth0", dst_addr="::1", ip_version=6), {}),
    ("null_dst_addr", seed_row(dst_addr=None), {}),
    ("empty_dst_addr", seed_row(dst_addr=""), {}),
    ("malformed_dst_addr", seed_row(dst_addr="8.8.8"), {}),
    ("malformed_dst_addr", seed_row(dst_addr="fe80::1%eth0", src_addr="::1", ip_version=6), {}),
    ("null_ip_version", seed_row(ip_version=None), {}),
    ("invalid_ip_version", seed_row(ip_version=5), {}),
    ("invalid_ip_version", seed_row(ip_version=-4), {"ip_version": pa.int8()}),
    ("ip_version_mismatch", seed_row(ip_version=6), {}),
    ("ip_version_mismatch", seed_row(dst_addr="::ffff:8.8.8.8"), {}),
    ("null_rtt", seed_row(rtt=None), {}),
    ("non_finite_rtt", seed_row(rtt=math.nan), {}),
    ("non_finite_rtt", seed_row(rtt=math.inf), {"rtt": pa.float32()}),
    ("null_size", seed_row(size=None), {}),
    ("non_integral_size", seed_row(size=64.5), {"size": pa.float64()}),
    ("non_integral_size", seed_row(size=64.5), {"size": pa.float32()}),
    ("non_integral_size", seed_row(size=math.nan), {"size": pa.float64()}),
    ("size_out_of_range", seed_row(size=65536), {}),
    ("size_out_of_range", seed_row(size=-1), {"size": pa.int8()}),
    ("size_out_of_range", seed_row(size=2**64 - 1), {"size": pa.uint64()}),
    ("size_out_of_range", seed_row(size=-64.0), {"size": pa.float64()}),
    ("null_packet_error_count", seed_row(packet_error_count=None), {}),
    ("non_integral_packet_error_count", seed_row(packet_error_count=0.25), {"packet_error_count": pa.float64()}),
    ("packet_error_count_out_of_range", seed_row(packet_error_count=256), {}),
    ("packet_error_count_out_of_range", seed_row(packet_error_count=-1), {"packet_error_count": pa.int16()}),
]


def test_every_reason_has_a_vectorized_case():
    assert {reason for reason, _, _ in BAD} == set(REASONS)


@pytest.mark.parametrize(("reason", "row", "types"), BAD, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BAD)])
def test_rejection_vectorized(reason, row, types):
    good = seed_row()
    table = make_table([good, row, good], **types)
    enc = assert_matches_per_row(table)
    assert enc.accepted.tolist() == [0, 2]
    assert enc.rejected.tolist() == [1]
    assert enc.reasons.tolist() == [reason]
    assert enc.reason_counts() == {reason: 1}
    assert tokens_of(enc, 0) == tokens_of(enc, 2) == encode_measurement(good)


def test_null_typed_columns_reject_every_row():
    for column, reason in [("rtt", "null_rtt"), ("src_addr", "null_src_addr"), ("event_time", "null_event_time")]:
        table = make_table([seed_row(), seed_row()])
        table = table.set_column(table.schema.get_field_index(column), column, pa.nulls(2))
        check_schema(table.schema)
        enc = encode_table(table)
        assert len(enc.accepted) == 0 and enc.reasons.tolist() == [reason, reason]


def test_first_failing_check_wins_vectorized():
    rows = [seed_row(msm_id=None, src_addr="", rtt=math.nan), seed_row(src_addr="", dst_addr=None, size=-1)]
    enc = assert_matches_per_row(make_table(rows))
    assert enc.reasons.tolist() == ["null_msm_id", "empty_src_addr"]


def test_failed_ping_is_valid():
    enc = encode_table(make_table([seed_row(rtt=-1.0, packet_error_count=3)]))
    assert enc.accepted.tolist() == [0] and len(enc.rejected) == 0


# --- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", COLUMNS)
def test_schema_missing_column(missing):
    table = make_table([seed_row()]).drop_columns([missing])
    for call in (lambda: check_schema(table.schema), lambda: encode_table(table)):
        with pytest.raises(SchemaError) as info:
            call()
        assert info.value.column == missing
        assert missing in str(info.value)
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("column", "bad_type", "value"),
    [
        ("rtt", pa.string(), "42.5"),
        ("rtt", pa.int64(), 42),
        ("msm_id", pa.string(), "12345"),
        ("msm_id", pa.float64(), 12345.0),
        ("event_time", pa.int64(), SEED_TS),
        ("event_time", pa.string(), "2025-06-24T12:00:00Z"),
        ("src_addr", pa.binary(), b"\xc0\x00\x02\x01"),
        ("dst_addr", pa.int64(), 0x08080808),
        ("ip_version", pa.float64(), 4.0),
        ("size", pa.string(), "64"),
        ("packet_error_count", pa.bool_(), False),
    ],
)
def test_schema_wrong_type(column, bad_type, value):
    rows = [seed_row(**{column: value})]
    table = make_table(rows, **{column: bad_type})
    for call in (lambda: check_schema(table.schema), lambda: encode_table(table)):
        with pytest.raises(SchemaError) as info:
            call()
        assert info.value.column == column
        assert column in str(info.value) and str(bad_type) in str(info.value)


# --- time zones and units ------------------------------------------------------------------------

PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris", "America/Los_Angeles", "+05:30"])
def test_timestamp_units_and_time_zones(unit, tz):
    k = PER_SECOND[unit]
    # (stored value in the unit, expected epoch seconds computed by hand)
    cases = [
        (SEED_TS * k, calendar.timegm((2025, 6, 24, 12, 0, 0))),
        (SEED_TS * k + (k - 1), SEED_TS),  # last tick of the second
        (0, 0),
        (-1, -1),  # one tick before the epoch is second -1 (floor, not truncation toward zero)
        (-k, -1),
        (-k - 1, -2),
        (calendar.timegm((1900, 1, 1, 0, 0, 0)) * k + k // 2, -2208988800),
    ]
    rows = [seed_row(msm_id=i) for i in range(len(cases))]
    table = make_table(rows).set_column(
        1, "event_time", pa.array([c[0] for c in cases], pa.int64()).cast(pa.timestamp(unit, tz=tz))
    )
    enc = encode_table(table)
    assert enc.accepted.tolist() == list(range(len(cases)))
    assert enc.timestamp.tolist() == [c[1] for c in cases]
    for i, (_, seconds) in enumerate(cases):
        toks = tokens_of(enc, i)
        j = toks.index(8)
        assert toks[j : j + 9] == [8, *[10 + x for x in struct.pack(">q", seconds)]]
        # The per-row encoder agrees, given what Arrow hands out for the row.
        if unit == "ns":
            row = dict(rows[i], event_time=table.column("event_time").to_numpy()[i])  # datetime64[ns]
        else:
            row = table.slice(i, 1).to_pylist()[0]
        assert encode_measurement(row) == toks


def test_no_time_zone_is_utc_not_local(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert time.timezone != 0  # local time really is not UTC here
        naive = dt.datetime(2025, 6, 24, 12, 0, 0)
        toks = encode_measurement(seed_row(event_time=naive))
        assert toks == encode_measurement(seed_row())
        table = make_table([seed_row(event_time=naive)], event_time=pa.timestamp("us"))
        enc = encode_table(table)
        assert enc.timestamp.tolist() == [SEED_TS]
        assert tokens_of(enc, 0) == toks
        assert encode_measurement(table.to_pylist()[0]) == toks
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert "TZ" not in os.environ


# --- integer widths and float columns ------------------------------------------------------------

INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


@pytest.mark.parametrize("int_type", INT_TYPES, ids=str)
def test_integer_columns_of_any_width(int_type):
    rows = [seed_row(msm_id=100, size=64, packet_error_count=3), seed_row(msm_id=7, size=0, ip_version=4)]
    base = encode_table(make_table(rows))
    types = {c: int_type for c in ("msm_id", "ip_version", "size", "packet_error_count")}
    enc = assert_matches_per_row(make_table(rows, **types))
    assert np.array_equal(enc.tokens, base.tokens) and len(enc.rejected) == 0


def test_extreme_integer_values():
    rows = [
        seed_row(msm_id=2**63 - 1),
        seed_row(msm_id=2**63),
        seed_row(msm_id=0, size=65535, packet_error_count=255),
        seed_row(size=2**63),
        seed_row(packet_error_count=2**32),
    ]
    enc = assert_matches_per_row(
        make_table(rows, msm_id=pa.uint64(), size=pa.uint64(), packet_error_count=pa.uint64())
    )
    assert rejected_reasons(enc) == {
        1: "msm_id_out_of_range",
        3: "size_out_of_range",
        4: "packet_error_count_out_of_range",
    }
    toks = tokens_of(enc, 0)
    j = toks.index(9)
    assert toks[j : j + 9] == [9, 10 + 0x7F] + [10 + 0xFF] * 7
    signed = assert_matches_per_row(make_table([seed_row(msm_id=-(2**63)), seed_row(msm_id=-1)]))
    toks = tokens_of(signed, 0)
    j = toks.index(9)
    assert toks[j : j + 9] == [9, 10 + 0x80] + [10] * 7
    toks = tokens_of(signed, 1)
    j = toks.index(9)
    assert toks[j : j + 9] == [9] + [10 + 0xFF] * 8


def test_float32_rtt_widened_exactly():
    values = [0.1, 42.5, -1.0, 1e-45, 3.4e38, -0.0]
    rows = [seed_row(rtt=v) for v in values]
    enc = assert_matches_per_row(make_table(rows, rtt=pa.float32()))
    for i, v in enumerate(values):
        f32 = struct.unpack(">f", struct.pack(">f", v))[0]  # the float32 value, widened by Python exactly
        toks = tokens_of(enc, i)
        j = toks.index(5)
        assert toks[j : j + 9] == [5, *[10 + x for x in struct.pack(">d", f32)]]
    assert struct.unpack(">f", struct.pack(">f", 0.1))[0] != 0.1


def test_float_size_and_errors():
    rows = [
        seed_row(size=64.0, packet_error_count=2.0),
        seed_row(size=64.5),
        seed_row(size=65535.0, packet_error_count=255.0),
        seed_row(packet_error_count=1.5),
        seed_row(size=-0.0),
    ]
    for t in (pa.float32(), pa.float64()):
        enc = assert_matches_per_row(make_table(rows, size=t, packet_error_count=t))
        assert rejected_reasons(enc) == {1: "non_integral_size", 3: "non_integral_packet_error_count"}
        ints = encode_table(make_table([seed_row(size=64, packet_error_count=2)]))
        assert tokens_of(enc, 0) == tokens_of(ints, 0)
        toks = tokens_of(enc, 4)
        j = toks.index(6)
        assert toks[j : j + 3] == [6, 10, 10]


# --- tokenizer.spans: the copy helpers the encoder and the packer place runs with -----------------


def test_spans_place_runs_at_byte_offsets():
    from tokenizer.spans import as_blocks, spans

    tokens = np.zeros(12, dtype=np.uint16)
    spans(tokens, 6)[[0, 12]] = as_blocks(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint16))
    assert tokens.tolist() == [1, 2, 3, 0, 0, 0, 4, 5, 6, 0, 0, 0]
    grid = np.zeros((2, 4), dtype=np.uint8)  # read flat: offset 5 is row 1, column 1
    spans(grid, 2)[[5]] = as_blocks(np.array([[7, 8]], dtype=np.uint8))
    assert grid.tolist() == [[0, 0, 0, 0], [0, 7, 8, 0]]


def test_spans_refuses_a_non_contiguous_buffer():
    from tokenizer.spans import spans

    with pytest.raises(ValueError, match="C-contiguous"):
        spans(np.zeros((4, 4), dtype=np.uint16)[:, :2], 2)
