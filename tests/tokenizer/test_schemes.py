"""The scheme seam: get_scheme, the one tokenizer check, the record parser and decode_record (v1)."""

from __future__ import annotations

import numpy as np
import pytest

import tokenizer
from tokenizer import PAD, TokenizerMismatch, check_tokenizer, encode_measurement, get_scheme
from tokenizer.measurement import decode_measurement


def _row(src, dst, rtt, t, msm=1001, size=64, errors=0):
    import datetime as dt

    return {"msm_id": msm, "event_time": dt.datetime.fromtimestamp(t, dt.timezone.utc), "src_addr": src,
            "dst_addr": dst, "ip_version": 6 if ":" in src else 4, "rtt": rtt, "size": size,
            "packet_error_count": errors}


ROWS = [
    _row("192.0.2.1", "8.8.8.8", 42.5, 1750766400, msm=12345),
    _row("192.0.2.1", "8.8.4.4", -1.0, 1750766460, errors=3),
    _row("2001:db8::1", "2001:4860:4860::8888", 0.25, 1750766401, size=0, msm=7),
]


def _record(rows, seq_len=1024):
    flat = np.concatenate([encode_measurement(r) for r in rows]).astype(np.uint16)
    out = np.full(seq_len, PAD, np.uint16)
    out[: len(flat)] = flat
    return out


def test_get_scheme_by_name_and_by_manifest_entry():
    v1 = get_scheme("v1")
    assert v1.info() == {"name": "v1", "version": 1, "vocab_size": 267, "pad_id": 266}
    assert get_scheme(v1.info()) is v1
    assert "v1" in tokenizer.scheme_names()
    with pytest.raises(TokenizerMismatch, match="unknown tokenizer scheme 'v9'"):
        get_scheme("v9")
    with pytest.raises(TokenizerMismatch, match="vocab_size is 300"):
        get_scheme({**v1.info(), "vocab_size": 300})


def test_check_tokenizer_names_what_disagrees():
    v1 = get_scheme("v1")
    assert check_tokenizer(v1.info(), 1024, expected="v1", expected_seq_len=1024) is v1
    with pytest.raises(TokenizerMismatch, match="seq_len is 512 but seq_len=1024"):
        check_tokenizer(v1.info(), 512, expected_seq_len=1024)
    with pytest.raises(TokenizerMismatch, match="pad_id is 266 but 0 is expected"):
        check_tokenizer(v1.info(), 1024, expected={**v1.info(), "pad_id": 0})
    with pytest.raises(TokenizerMismatch, match="shorter than one v1 measurement"):
        check_tokenizer(v1.info(), 40)


def test_v1_decode_record_gives_the_rows_back():
    rows = get_scheme("v1").decode_record(_record(ROWS))
    assert len(rows) == len(ROWS)
    for got, want in zip(rows, ROWS):
        assert got == {
            "src_addr": want["src_addr"], "dst_addr": want["dst_addr"], "rtt": want["rtt"],
            "event_time": int(want["event_time"].timestamp()), "size": want["size"],
            "packet_error_count": want["packet_error_count"], "msm_id": want["msm_id"],
        }
    assert get_scheme("v1").decode_record(np.full(1024, PAD, np.uint16)) == []


def test_v1_parser_agrees_with_the_per_measurement_decoder():
    record = _record(ROWS)
    p = get_scheme("v1").parse_records(np.stack([record, record]), first_record=5)
    assert len(p) == 6 and p.record.tolist() == [5, 5, 5, 6, 6, 6]
    assert p.family.tolist() == [4, 4, 6] * 2
    flat = np.stack([record, record]).reshape(-1)
    for i, want in enumerate(ROWS * 2):
        m = decode_measurement(flat[1024 * (i // 3) + p.start[i] : 1024 * (i // 3) + p.end[i]])
        assert m["rtt"] == p.rtt[i] and m["size"] == p.size[i] and m["msm_id"] == p.msm_id[i]
        assert int(m["event_time"].timestamp()) == p.timestamp[i]
    codec = get_scheme("v1").rtt
    values = codec.decode(flat[p.rtt_pos[:, None] + np.arange(codec.width)])
    assert values.tolist() == p.rtt.tolist()
    assert (flat[p.rtt_pos - 1] == codec.role).all()
    assert np.array_equal(codec.encode(p.rtt), flat[p.rtt_pos[:, None] + np.arange(codec.width)])


def test_v1_parser_refuses_a_measurement_without_a_block():
    record = _record(ROWS[:1])
    cut = record.copy()
    cut[1:] = PAD  # MeasurementStart alone
    with pytest.raises(tokenizer.DecodeError):
        get_scheme("v1").parse_records(cut[None])


def test_v1_rtt_value_order_is_byte_order_for_positive_rtts():
    codec = get_scheme("v1").rtt
    values = np.sort(np.random.default_rng(0).uniform(0.0, 5000.0, 500))
    tokens = codec.encode(values)
    # lexicographic order of the token tuples (ids in value_tokens order) equals the value order
    ranks = [tuple(int(np.flatnonzero(codec.value_tokens(k) == t)[0]) for k, t in enumerate(row)) for row in tokens]
    assert ranks == sorted(ranks)
    assert codec.encode(np.array([-1.0]))[0][0] in codec.failure_tokens
