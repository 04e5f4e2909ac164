"""v1's RTT codec as an ordered code (the descent's interface): byte order is value order, failures and
inf/NaN apart."""

from __future__ import annotations

import numpy as np
import pytest

from tokenizer import fields
from tokenizer import get_scheme
from tokenizer.vocab import BYTE_OFFSET, RTT_START

V1_RTT_CODE = get_scheme("v1").rtt


def test_byte_order_is_value_order_for_non_negative_doubles():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 0x7FF0_0000_0000_0000, size=5000, dtype=np.uint64)  # every finite non-negative double
    values = np.concatenate([bits.view(np.float64), [0.0, 5e-324, 1.0, 302_281.0, np.finfo(np.float64).max]])
    tokens = V1_RTT_CODE.encode(values)  # (n, 8)
    assert tokens.shape == (len(values), 8) and tokens.min() >= BYTE_OFFSET
    by_tokens = sorted(range(len(values)), key=lambda i: tokens[i].tolist())
    assert np.all(np.diff(values[by_tokens]) >= 0)
    np.testing.assert_array_equal(V1_RTT_CODE.decode(tokens), values)
    np.testing.assert_array_equal(V1_RTT_CODE.decode(tokens), fields.RTT.from_tokens(tokens))


def test_the_success_code_holds_finite_non_negative_values_and_failures_are_the_sign_bit():
    code = V1_RTT_CODE
    assert code.role == RTT_START and code.width == 8
    np.testing.assert_array_equal(code.value_tokens(0), np.arange(256) + BYTE_OFFSET)
    first = code.success_mask(np.zeros((1, 0), np.int64))[0]
    assert first.sum() == 128 and first[:128].all()
    np.testing.assert_array_equal(np.sort(code.failure_tokens), np.arange(128, 256) + BYTE_OFFSET)
    assert (code.decode(code.encode(np.array([-1.0])))[0] == -1.0)
    assert code.encode(np.array([-1.0]))[0, 0] in code.failure_tokens
    # After 0x7F the second byte may not complete an all-ones exponent (inf or NaN).
    second = code.success_mask(np.array([[BYTE_OFFSET + 0x7F], [BYTE_OFFSET + 0x40]]))
    assert second[0].sum() == 0xF0 and second[1].all()
    for b in range(256):
        tok = np.array([[BYTE_OFFSET + 0x7F, BYTE_OFFSET + b, *[BYTE_OFFSET + 0xFF] * 6]])
        value = code.decode(tok)[0]
        assert np.isfinite(value) == bool(second[0, b]), b
    assert code.success_mask(np.full((3, 5), BYTE_OFFSET)).all()


def test_positions_outside_the_code_are_refused():
    with pytest.raises(ValueError, match="outside 0..7"):
        V1_RTT_CODE.value_tokens(8)
