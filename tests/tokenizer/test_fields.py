"""Field block codecs: the documented byte formats, scalar and vectorized paths in agreement, exact inverses."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.tokenizer.rows import seed_row
from tokenizer import DecodeError, encode_measurement, fields, grammar
from tokenizer.vocab import (
    BLOCK_NAMES,
    BLOCK_ROLE,
    BYTE_OFFSET,
    DEST_IP_START,
    ERROR_COUNT_START,
    IPV4_START,
    IPV6_START,
    MSM_ID_START,
    RTT_START,
    SIZE_START,
    SRC_IP_START,
    TIMESTAMP_START,
    block_lengths,
)


def test_each_block_in_the_documented_format():
    # Written out from the data contract (role token, then big-endian bytes), not from the codecs.
    assert fields.RTT.encode(42.5) == [RTT_START, *(BYTE_OFFSET + b for b in bytes.fromhex("4045400000000000"))]
    assert fields.SIZE.encode(1500) == [SIZE_START, BYTE_OFFSET + 0x05, BYTE_OFFSET + 0xDC]
    assert fields.ERRORS.encode(3) == [ERROR_COUNT_START, BYTE_OFFSET + 3]
    assert fields.TIMESTAMP.encode(-1) == [TIMESTAMP_START, *[BYTE_OFFSET + 0xFF] * 8]
    assert fields.MSM_ID.encode(258) == [MSM_ID_START, *[BYTE_OFFSET] * 6, BYTE_OFFSET + 1, BYTE_OFFSET + 2]
    assert fields.SRC.encode(bytes([192, 0, 2, 1])) == [SRC_IP_START, IPV4_START, 202, 10, 12, 11]
    assert fields.DST.encode(bytes(16)) == [DEST_IP_START, IPV6_START, *[BYTE_OFFSET] * 16]


def test_codecs_cover_the_canonical_blocks_with_their_lengths():
    assert [c.block for c in fields.CODECS] == list(range(len(BLOCK_NAMES)))
    assert [c.name for c in fields.CODECS] == list(BLOCK_NAMES)
    assert [c.role for c in fields.CODECS] == BLOCK_ROLE.tolist()
    assert sorted(fields.BY_ROLE) == sorted(BLOCK_ROLE.tolist())
    for version in (4, 6):
        lengths = [c.length(version) if isinstance(c, fields.AddressCodec) else c.length for c in fields.CODECS]
        assert tuple(lengths) == block_lengths(version)


def test_integer_bounds_are_the_formats():
    assert fields.SIZE.bounds == (0, 0xFFFF)
    assert fields.ERRORS.bounds == (0, 0xFF)
    assert fields.TIMESTAMP.bounds == fields.MSM_ID.bounds == (-(1 << 63), (1 << 63) - 1)
    assert fields.RTT.bounds is None
    with pytest.raises(struct.error):
        fields.SIZE.encode(0x10000)


def test_blocks_are_those_of_a_whole_measurement():
    tokens = encode_measurement(seed_row(src_addr="2001:db8::1", dst_addr="2a02:1810::5", ip_version=6))
    blocks = grammar.split_blocks(tokens)
    assert blocks[0].tolist() == fields.SRC.encode(bytes.fromhex("20010db8" + "0" * 23 + "1"))
    for codec, value in ((fields.RTT, 42.5), (fields.SIZE, 64), (fields.ERRORS, 0), (fields.MSM_ID, 12345),
                         (fields.TIMESTAMP, 1750766400)):  # fmt: skip
        assert blocks[codec.block].tolist() == codec.encode(value)
        assert codec.decode(blocks[codec.block].tolist()) == value


floats = st.floats(allow_nan=False, allow_infinity=False)
ints = {
    "size": st.integers(0, 0xFFFF),
    "packet_error_count": st.integers(0, 0xFF),
    "timestamp": st.integers(-(1 << 63), (1 << 63) - 1),
    "msm_id": st.integers(-(1 << 63), (1 << 63) - 1),
}


@given(st.data())
def test_scalar_and_vectorized_paths_agree_and_invert(data):
    for codec in fields.CODECS[2:]:
        strategy = floats if codec is fields.RTT else ints[codec.name]
        values = data.draw(st.lists(strategy, min_size=1, max_size=5))
        blocks = [codec.encode(v) for v in values]
        assert [codec.decode(b) for b in blocks] == values
        assert all(len(b) == codec.length and b[0] == codec.role for b in blocks)
        raw = codec.to_bytes(np.array(values, dtype=codec.dtype.newbyteorder("=")))  # (n, width)
        assert raw.dtype == np.uint8 and raw.shape == (len(values), codec.width)
        assert [bytes(r) for r in raw] == [codec.pack(v) for v in values]
        payloads = np.array([b[1:] for b in blocks], dtype=np.uint16)  # (n, width)
        assert codec.from_tokens(payloads).tolist() == values
        assert codec.from_tokens(payloads.reshape(len(values), 1, codec.width)).shape == (len(values), 1)


def test_vectorized_rtt_decode_is_bit_exact_on_any_bytes():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(1000, 8), dtype=np.uint8)  # NaN payloads, infinities, subnormals...
    raw[:4] = [[0x7F, 0xF0, 0, 0, 0, 0, 0, 1], [0xFF, 0xF8, 0, 0, 0, 0, 0, 0], [0x7F, 0xF0, 0, 0, 0, 0, 0, 0], [0] * 8]
    got = fields.RTT.from_tokens(raw.astype(np.int64) + BYTE_OFFSET)
    want = np.array([struct.unpack(">d", bytes(r))[0] for r in raw])
    assert got.dtype == np.float64
    assert got.view(np.uint64).tolist() == want.view(np.uint64).tolist()
    for r in raw[:50]:  # the scalar decode too, bit for bit
        assert struct.pack(">d", fields.RTT.decode([RTT_START, *(BYTE_OFFSET + r.astype(int))])) == bytes(r)


def test_address_blocks_round_trip():
    for packed in (bytes([10, 0, 0, 1]), bytes(range(16))):
        block = fields.DST.encode(packed)
        assert len(block) == fields.AddressCodec.length(4 if len(packed) == 4 else 6)
        assert fields.DST.decode(block) == (4 if len(packed) == 4 else 6, packed)
        assert fields.DST.decode([99, *block], start=1) == fields.DST.decode(block)
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        fields.SRC.encode(bytes(5))


@pytest.mark.parametrize(
    "codec, tokens, message",
    [
        (fields.RTT, [SIZE_START, *[BYTE_OFFSET] * 8], "role token 5"),
        (fields.RTT, [RTT_START, *[BYTE_OFFSET] * 7], "expected 8 byte tokens"),
        (fields.SIZE, [SIZE_START, BYTE_OFFSET, RTT_START], "expected 2 byte tokens"),
        (fields.SRC, [SRC_IP_START, RTT_START, *[BYTE_OFFSET] * 4], "Ipv4Start/Ipv6Start"),
        (fields.SRC, [SRC_IP_START, IPV6_START, *[BYTE_OFFSET] * 4], "expected 16 byte tokens"),
        (fields.DST, [], "role token 2"),
    ],
)
def test_malformed_blocks_are_refused(codec, tokens, message):
    with pytest.raises(DecodeError, match=message):
        codec.decode(tokens)


def test_vectorized_decode_refuses_non_byte_tokens():
    with pytest.raises(DecodeError, match="not a byte token"):
        fields.RTT.from_tokens(np.array([[BYTE_OFFSET] * 7 + [RTT_START]]))
    with pytest.raises(DecodeError, match="expected"):
        fields.RTT.from_tokens(np.array([[BYTE_OFFSET] * 7]))
