"""The per-row encoder never coerces values of the wrong Python type."""

from __future__ import annotations

import pytest

from tests.tokenizer.rows import seed_row
from tokenizer import InvalidMeasurement, encode_measurement

ROW = seed_row()


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("msm_id", 1.5, "msm_id_out_of_range"),
        ("msm_id", "12345", "msm_id_out_of_range"),
        ("msm_id", True, "msm_id_out_of_range"),
        ("ip_version", "4", "invalid_ip_version"),
        ("ip_version", 4.0, "invalid_ip_version"),
        ("size", "64", "non_integral_size"),
        ("packet_error_count", "0", "non_integral_packet_error_count"),
    ],
)
def test_wrong_types_are_rejected_not_coerced(field, value, reason):
    with pytest.raises(InvalidMeasurement) as info:
        encode_measurement(dict(ROW, **{field: value}))
    assert info.value.reason == reason and info.value.field == field


def test_integral_floats_for_size_are_accepted():
    assert encode_measurement(dict(ROW, size=64.0)) == encode_measurement(ROW)
