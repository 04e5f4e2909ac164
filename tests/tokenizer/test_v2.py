"""Scheme v2: the vectorized encoder and the record assembly against the per-row reference, the parser's
round trip, the RTT scale's bounds, and the parser's refusals."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipelines.pretokenize.packing import plan_runs
from tests.tokenizer.test_table import COLUMNS, SEED_TYPES, make_table
from tokenizer import DecodeError, get_scheme, v2, v2_encode, v2_reference
from tokenizer import vocab_v2 as vocab
from tokenizer.table import encode_table as encode_v1

UTC = dt.timezone.utc


def _items(table: pa.Table):
    """Encode ``table`` with v2's vectorized encoder and put the accepted rows in (source, time, row) order."""
    enc = v2_encode.encode_table(table)
    w = enc.src_words
    order = np.lexsort((enc.accepted, enc.timestamp, w[:, 1], w[:, 0]))
    ws = w[order]
    new = np.ones(len(order), bool)
    new[1:] = np.any(ws[1:] != ws[:-1], axis=1)
    body_len = np.diff(enc.offsets)[order]
    off = np.zeros(len(order) + 1, np.int64)
    np.cumsum(body_len, out=off[1:])
    idx = np.repeat(enc.offsets[:-1][order] - off[:-1], body_len) + np.arange(off[-1])
    items = v2_encode.Items(body=enc.tokens[idx], offsets=off, source=np.cumsum(new) - 1, family=enc.ip_version[order],
                     src_words=ws, timestamp=enc.timestamp[order])
    return enc, order, items


def _pack(items, seq_len):
    _, start, cont = v2_encode.head_lengths(items)
    body = np.diff(items.offsets)
    bounds = plan_runs(start + body, cont + body, seq_len)
    return v2_encode.assemble(items, seq_len, bounds)


def _rows_in_order(table, enc, order):
    rows = table.to_pylist()
    return [rows[i] for i in enc.accepted[order]]


addresses4 = st.sampled_from(["192.0.2.1", "192.0.2.7", "10.0.0.1", "8.8.8.8", "1.1.1.1"])
addresses6 = st.sampled_from(["2001:db8::1", "2001:4860:4860::8888", "::1", "fe80::5"])
rtts = st.one_of(
    st.just(-1.0), st.just(0.0), st.floats(0.01, 400_000.0), st.floats(-5.0, 5.0), st.floats(1e7, 1e300),
    st.floats(1e-9, 0.02),
)
times = st.one_of(st.integers(1_300_000_000, 1_300_000_000 + 70_000), st.integers(-(2**33), 2**34))


@st.composite
def tables(draw):
    n = draw(st.integers(1, 40))
    rows = []
    for _ in range(n):
        six = draw(st.booleans())
        rows.append({
            "msm_id": draw(st.one_of(st.integers(0, 2**40), st.none())) if draw(st.integers(0, 9)) == 0 else 1001,
            "event_time": dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=draw(times)),
            "src_addr": draw(addresses6 if six else addresses4),
            "dst_addr": draw(st.one_of(addresses6, addresses4) if draw(st.integers(0, 9)) == 0
                             else (addresses6 if six else addresses4)),
            "ip_version": 6 if six else 4,
            "rtt": draw(rtts),
            "size": draw(st.one_of(st.integers(0, 300), st.integers(0, 65535))),
            "packet_error_count": draw(st.integers(0, 255)),
        })
    return make_table(rows)


@pytest.mark.slow  # 120 random tables against the per-row reference: over ~2 s on 2 cores
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.sampled_from([64, 100, 1024]))
def test_vectorized_encoder_and_assembly_equal_the_per_row_reference(table, seq_len):
    enc, order, items = _items(table)
    v1 = encode_v1(table)
    assert enc.accepted.tolist() == v1.accepted.tolist()  # the same rows rejected, for the same reasons
    assert enc.reasons.tolist() == v1.reasons.tolist()
    rows = table.to_pylist()
    for k, i in enumerate(enc.accepted.tolist()):  # every body, row for row
        assert enc.tokens[enc.offsets[k] : enc.offsets[k + 1]].tolist() == v2_reference.reference_body(rows[i])
    if not len(enc.accepted):
        return
    records = _pack(items, seq_len)
    want = v2_reference.reference_records(_rows_in_order(table, enc, order), seq_len)
    assert len(records) == len(want)
    for got, expected in zip(records, want):
        assert got[: len(expected)].tolist() == expected
        assert (got[len(expected) :] == vocab.PAD).all()


@pytest.mark.slow  # 120 random tables encoded and decoded: over ~2 s on 2 cores
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_decode_record_gives_the_accepted_rows_back(table):
    enc, order, items = _items(table)
    if not len(enc.accepted):
        return
    records = _pack(items, 1024)
    got = [r for rec in records for r in get_scheme("v2").decode_record(rec)]
    want = _rows_in_order(table, enc, order)
    assert len(got) == len(want)
    import ipaddress

    for g, w in zip(got, want):
        assert g["src_addr"] == str(ipaddress.ip_address(w["src_addr"]))
        assert g["dst_addr"] == str(ipaddress.ip_address(w["dst_addr"]))
        assert g["event_time"] == int(w["event_time"].timestamp() // 1)
        assert g["size"] == w["size"] and g["packet_error_count"] == w["packet_error_count"]
        assert "msm_id" not in g
        if w["rtt"] == -1.0 or not vocab.RTT_LO <= w["rtt"] < vocab.RTT_HI:
            assert np.float64(g["rtt"]).tobytes() == np.float64(w["rtt"]).tobytes()  # failure, escape: exact
        else:
            assert abs(g["rtt"] / w["rtt"] - 1) <= 0.001


def test_rtt_scale_meets_its_bounds():
    x = np.geomspace(0.01, 302_281.0 * 10, 2_000_000)
    tokens = v2.V2.rtt.encode(x)
    assert tokens.shape == (len(x), 2)
    back = v2.V2.rtt.decode(tokens)
    assert np.max(np.abs(back / x - 1)) <= 0.001
    coarse = (tokens[:, 0] - vocab.RTT_COARSE_BASE) * vocab.RTT_FINE + vocab.RTT_FINE // 2  # the coarse token's middle
    assert np.max(np.abs(vocab.RTT_CENTRES[coarse] / x - 1)) <= 0.10
    assert vocab.RTT_HI >= 302_281.0
    # value order: the token pairs sort as the values
    assert np.all(np.diff(tokens[:, 0]) >= 0)
    same = tokens[1:, 0] == tokens[:-1, 0]
    assert np.all(np.diff(tokens[:, 1])[same] >= 0)


def _records_of(rows, seq_len=1024):
    return _pack(_items(make_table(rows))[2], seq_len)


def _row(t, rtt=10.0, src="192.0.2.1", dst="8.8.8.8"):
    return {"msm_id": 1, "event_time": dt.datetime.fromtimestamp(t, UTC), "src_addr": src, "dst_addr": dst,
            "ip_version": 4, "rtt": rtt, "size": 64, "packet_error_count": 0}


def test_time_is_a_delta_where_shorter_and_sources_head_runs():
    records = _records_of([_row(1000), _row(1010), _row(1010 + 300), _row(1010 + 300 + 70_000),
                           _row(5, src="192.0.2.9")])
    rec = records[0].tolist()
    assert rec[:10] == [vocab.SRC4, 192, 0, 2, 1, vocab.TIME32, 0, 0, 3, 232]
    assert rec.count(vocab.SRC4) == 2  # one header per source
    assert vocab.DELTA_BASE + 10 in rec and vocab.DELTA16 in rec and rec.count(vocab.TIME32) == 3


def test_parser_refuses_malformed_records():
    rec = _records_of([_row(1000), _row(1010)])[0]
    scheme = get_scheme("v2")
    bad = rec.copy()
    bad[0] = vocab.DST4  # no source header
    with pytest.raises(DecodeError):
        scheme.parse_records(bad[None])
    bad = rec.copy()
    bad[5] = vocab.DELTA_BASE  # a run that starts with a delta
    with pytest.raises(DecodeError):
        scheme.parse_records(bad[None])
    bad = rec.copy()
    end = int(np.flatnonzero(rec == vocab.PAD)[0])
    bad[end + 3] = vocab.ERR_BASE  # PAD not a suffix
    with pytest.raises(DecodeError, match="PAD"):
        scheme.parse_records(bad[None])
    bad = rec.copy()
    bad[2] = 4000  # outside the vocabulary
    with pytest.raises(DecodeError, match="outside the v2 vocabulary"):
        scheme.parse_records(bad[None])


def test_plan_runs_is_greedy_and_exact():
    start = np.array([20, 10, 10, 20, 10])
    cont = np.array([20, 3, 3, 20, 3])
    b = plan_runs(start, cont, 30)
    assert b.tolist() == [0, 3, 5]  # 20+3+3 = 26 (the next needs 20); then 20+3
    with pytest.raises(ValueError, match="shorter than one item"):
        plan_runs(np.array([40]), np.array([40]), 30)
