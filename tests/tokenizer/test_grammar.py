"""The token grammar: real measurements pass, random draws under its masks always decode."""

from __future__ import annotations

import datetime as dt
import ipaddress
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import decode_measurement, encode_measurement
from tokenizer.vocab import (
    BLOCK_ROLE,
    BYTE_OFFSET,
    IPV4_START,
    IPV6_START,
    MEASUREMENT_START,
    PAD,
    PERMUTATIONS,
    TIMESTAMP_START,
    VOCAB_SIZE,
)
from tokenizer import grammar


def _row(family=4, rtt=12.5, ts=1_750_723_200, msm_id=1001):
    src, dst = ("10.0.0.1", "8.8.8.8") if family == 4 else ("2001:db8::1", "2a02:1810::5")
    return {
        "msm_id": msm_id,
        "event_time": dt.datetime.fromtimestamp(ts, dt.timezone.utc),
        "src_addr": src,
        "dst_addr": dst,
        "ip_version": family,
        "rtt": rtt,
        "size": 64,
        "packet_error_count": 0,
    }


rows = st.builds(
    lambda family, rtt, ts, msm, a, b: {
        **_row(family, rtt, ts, msm),
        "src_addr": str(ipaddress.IPv4Address(a) if family == 4 else ipaddress.IPv6Address(a << 96 | b)),
        "dst_addr": str(ipaddress.IPv4Address(b) if family == 4 else ipaddress.IPv6Address(b << 64 | a)),
    },
    st.sampled_from([4, 6]),
    st.one_of(st.just(-1.0), st.floats(allow_nan=False, allow_infinity=False)),
    st.integers(grammar.TIMESTAMP_MIN, grammar.TIMESTAMP_MAX),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)


def _accepts(tokens) -> bool:
    """Every token allowed when it comes, and done exactly at the end."""
    state = grammar.initial(1)
    for i, t in enumerate(tokens):
        if state.done[0] or not grammar.allowed(state)[0, t]:
            return False
        state = grammar.advance(state, np.array([t]))
    return bool(state.done[0])


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(rows)
def test_every_encoded_measurement_is_grammatical(row):
    tokens = encode_measurement(row)
    assert _accepts(tokens)
    assert grammar.is_complete(tokens)
    assert not grammar.is_complete(tokens[:-1])
    blocks = grammar.split_blocks(tokens)
    assert sorted(blocks) == list(range(7))
    assert [int(blocks[b][0]) for b in range(7)] == BLOCK_ROLE.tolist()


@pytest.mark.slow
def test_real_records_are_grammatical(sample_dataset):
    from tests.trainer.helpers import make_config
    from tokenizer import split_measurements
    from trainer import data
    from trainer.eval.columns import read_records

    dataset = data.open_dataset(str(sample_dataset), make_config(sample_dataset))
    records = read_records(dataset, "val")[:20]
    count = 0
    for record in records:
        for m in split_measurements(record):
            assert _accepts(m)
            count += 1
    assert count > 200


def _draw(rng: np.random.Generator, prefix: list[int], n: int, bias=None) -> list[list[int]]:
    """Complete ``prefix`` n times with random logits under the grammar (no model)."""
    state = grammar.state_of(prefix).take(np.zeros(n, np.int64))
    out = [list(prefix) for _ in range(n)]
    for _ in range(80):
        active = ~state.done
        if not active.any():
            break
        logits = rng.normal(size=(n, VOCAB_SIZE)) * 3
        if bias is not None:
            logits += bias
        logits = np.where(grammar.allowed(state), logits, -np.inf)
        tokens = np.argmax(logits, axis=1)
        for i in np.flatnonzero(active):
            out[i].append(int(tokens[i]))
        state = grammar.advance(state, tokens, active)
    assert state.done.all()
    return out


@pytest.mark.parametrize(
    "prefix",
    [
        [MEASUREMENT_START],
        [MEASUREMENT_START, 1],  # inside the source block, family still open
        [MEASUREMENT_START, 1, IPV6_START, *[BYTE_OFFSET + 7] * 3],  # IPv6 source begun: dst must be IPv6
        [MEASUREMENT_START, 5, *[BYTE_OFFSET] * 8, 2, IPV4_START],  # rtt done, IPv4 destination begun
        [MEASUREMENT_START, TIMESTAMP_START, BYTE_OFFSET + 0xFF],  # a negative timestamp begun
    ],
)
def test_random_draws_under_the_grammar_always_decode(prefix):
    rng = np.random.default_rng(len(prefix))
    for tokens in _draw(rng, prefix, 200):
        assert tokens[: len(prefix)] == prefix  # the given part is kept
        row = decode_measurement(tokens)  # raises unless it is a whole valid measurement
        assert len(tokens) == (45 if row["ip_version"] == 4 else 69)
        if IPV6_START in prefix:
            assert row["ip_version"] == 6
        if prefix[-1] == IPV4_START:
            assert row["ip_version"] == 4


def test_draws_biased_to_extreme_bytes_still_decode():
    """Timestamps pushed towards the largest and smallest int64 stay within what decode can represent."""
    rng = np.random.default_rng(0)
    for byte in (0x7F, 0xFF, 0x80, 0x00):
        bias = np.zeros(VOCAB_SIZE)
        bias[BYTE_OFFSET + byte] = 100.0
        for tokens in _draw(rng, [MEASUREMENT_START], 50, bias):
            decode_measurement(tokens)


def _extreme_timestamp(pick) -> int:
    state = grammar.state_of([MEASUREMENT_START, TIMESTAMP_START])
    raw = []
    for _ in range(8):
        allowed = np.flatnonzero(grammar.allowed(state)[0]) - BYTE_OFFSET
        flipped = allowed ^ (0x80 if not raw else 0)  # offset binary orders the first byte by sign
        b = int(allowed[pick(flipped)])
        raw.append(b)
        state = grammar.advance(state, np.array([BYTE_OFFSET + b]))
    return struct.unpack(">q", bytes(raw))[0]


def test_timestamp_bounds_are_exactly_the_decodable_range():
    assert _extreme_timestamp(np.argmax) == grammar.TIMESTAMP_MAX
    assert _extreme_timestamp(np.argmin) == grammar.TIMESTAMP_MIN
    for ts in (grammar.TIMESTAMP_MIN, grammar.TIMESTAMP_MAX, 0, -1):
        assert grammar.is_complete(encode_measurement(_row(ts=ts)))


def test_masks_at_each_kind_of_position():
    def allowed(prefix):
        return set(np.flatnonzero(grammar.allowed(grammar.state_of(prefix))[0]).tolist())

    assert allowed([]) == {MEASUREMENT_START}
    assert allowed([MEASUREMENT_START]) == set(BLOCK_ROLE.tolist())
    assert allowed([MEASUREMENT_START, 1]) == {IPV4_START, IPV6_START}
    bytes_ = set(range(BYTE_OFFSET, BYTE_OFFSET + 256))
    assert allowed([MEASUREMENT_START, 1, IPV4_START]) == bytes_
    after_src = [MEASUREMENT_START, 1, IPV4_START, *[BYTE_OFFSET] * 4]
    assert allowed(after_src) == set(BLOCK_ROLE.tolist()) - {1}
    assert allowed([*after_src, 2]) == {IPV4_START}  # the family is fixed by the source
    assert allowed([MEASUREMENT_START, 7]) == bytes_
    whole = encode_measurement(_row())
    assert allowed(whole) == {MEASUREMENT_START}  # only the next measurement may follow


@pytest.mark.parametrize(
    "tokens",
    [
        [BYTE_OFFSET],  # no MeasurementStart
        [MEASUREMENT_START, BYTE_OFFSET],  # a byte where a block must start
        [MEASUREMENT_START, 5, BYTE_OFFSET, 6],  # a role inside the RTT bytes
        [MEASUREMENT_START, 7, BYTE_OFFSET, 7],  # a block twice
        [MEASUREMENT_START, 1, IPV4_START, *[BYTE_OFFSET] * 4, 2, IPV6_START],  # mixed families
        [MEASUREMENT_START, PAD],
        [MEASUREMENT_START, IPV4_START],  # a family token outside an address block
    ],
)
def test_ungrammatical_tokens_are_refused(tokens):
    with pytest.raises(grammar.GrammarError):
        grammar.state_of(tokens)
    assert not grammar.is_complete(tokens)


def test_all_block_orders_are_accepted():
    row_tokens = encode_measurement(_row(family=6))
    blocks = grammar.split_blocks(row_tokens)
    for order in PERMUTATIONS[:: 97]:
        tokens = [MEASUREMENT_START, *np.concatenate([blocks[b] for b in order]).tolist()]
        assert _accepts(tokens)
        assert decode_measurement(tokens) == decode_measurement(row_tokens)


def test_tokens_left_bounds_the_rest_of_a_measurement():
    v4 = encode_measurement(_row(family=4))
    v6 = encode_measurement(_row(family=6))
    for tokens in (v4, v6):
        for cut in range(len(tokens) + 1):
            state = grammar.state_of(tokens[:cut])
            left = int(grammar.tokens_left(state)[0])
            assert left >= len(tokens) - cut
            if state.family[0] or tokens is v6:  # exact once the family is known (IPv6 lengths before)
                assert left == len(tokens) - cut
