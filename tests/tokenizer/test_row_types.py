"""The per-row encoder never coerces values of the wrong Python type."""

from __future__ import annotations

import sys

import numpy as np

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


def test_validate_table_decides_exactly_like_encode_table():
    import pyarrow as pa

    from beam_pipelines.make_sample import synth
    from tokenizer import encode_table, validate_table

    table = synth.generate(5_000, seed=9)
    # Add one row of each of a few more reasons to the generator's dirty rows.
    extra = pa.Table.from_pylist(
        [seed_row(rtt=float("nan")), seed_row(size=70_000), seed_row(ip_version=6), seed_row(msm_id=None)],
        schema=table.schema,
    )
    table = pa.concat_tables([table, extra])
    enc, val = encode_table(table), validate_table(table)
    assert val.accepted.tolist() == enc.accepted.tolist()
    assert val.rejected.tolist() == enc.rejected.tolist()
    assert val.reasons.tolist() == enc.reasons.tolist()
    assert val.tokens == int(enc.offsets[-1])
    assert val.reason_counts() == enc.reason_counts() and len(val.reason_counts()) >= 6


def test_encode_table_from_many_threads_at_once():
    """Runners may encode in several threads of one process (e.g. Beam's multi_threading mode)."""
    from concurrent.futures import ThreadPoolExecutor

    from beam_pipelines.make_sample import synth
    from tokenizer import encode_table

    tables = [synth.generate(3_000, seed=s) for s in range(8)]  # each with its own few thousand addresses
    # Expected tokens from the per-row encoder, so no address is cached before the threads start.
    expected = []
    for t in tables:
        rows = []
        for row in t.to_pylist():
            try:
                rows.extend(encode_measurement(row))
            except InvalidMeasurement:
                pass
        expected.append(np.array(rows, dtype=np.uint16))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads very often, so races show up
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(lambda t: encode_table(t).tokens, tables * 5))
    finally:
        sys.setswitchinterval(interval)
    for i, tokens in enumerate(got):
        assert np.array_equal(tokens, expected[i % len(tables)])
