"""Field order: a deterministic function of the row's content, documented in tokenizer/order.py, uniform over 5040."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from beam_pipelines.make_sample import synth
from tokenizer import order
from tokenizer.measurement import encode_measurement
from tokenizer.table import encode_table
from tests.tokenizer.rows import UTC, seed_row

ROLE_TO_BLOCK = {1: 0, 2: 1, 5: 2, 6: 3, 7: 4, 8: 5, 9: 6}  # src, dst, rtt, size, errors, timestamp, msm_id
ALL_ORDERS = list(itertools.permutations(range(7)))  # lexicographic, as documented




# --- an independent implementation of the documented function ------------------------------------


def my_splitmix64(x: int) -> int:
    m = 2**64
    z = (x + 0x9E3779B97F4A7C15) % m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % m
    return z ^ (z >> 31)


def my_order(row: dict) -> tuple[int, ...]:
    """The documented order of ``row``, from struct/ipaddress and the docstring of tokenizer/order.py."""
    src = int(ipaddress.ip_address(row["src_addr"]))
    dst = int(ipaddress.ip_address(row["dst_addr"]))
    seconds = math.floor((row["event_time"] - dt.datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    words = [
        row["msm_id"] % 2**64,  # two's complement
        seconds % 2**64,
        struct.unpack(">Q", struct.pack(">d", row["rtt"]))[0],
        src >> 64,
        src % 2**64,
        dst >> 64,
        dst % 2**64,
        row["size"] | row["packet_error_count"] << 16 | row["ip_version"] << 24,
    ]
    h = 0
    for w in words:
        h = my_splitmix64(h ^ w)
    return ALL_ORDERS[h % 5040]


def observed_order(tokens) -> tuple[int, ...]:
    """Block order of one measurement's tokens: role tokens in sequence, family tokens skipped."""
    roles = [t for t in list(tokens)[1:] if t < 10 and t not in (3, 4)]
    return tuple(ROLE_TO_BLOCK[r] for r in roles)


def observed_orders(tokens: np.ndarray) -> np.ndarray:
    """(n, 7) block orders of concatenated measurements, vectorized (role ids never appear as bytes)."""
    small = tokens[tokens < 10].reshape(-1, 10)  # MeasurementStart, 7 roles, 2 family tokens per row
    assert np.all(small[:, 0] == 0)
    body = small[:, 1:]
    roles = body[(body != 3) & (body != 4)].reshape(-1, 7)
    lut = np.zeros(10, dtype=np.int64)
    for role, block in ROLE_TO_BLOCK.items():
        lut[role] = block
    return lut[roles]


def lexicographic_rank(perms: np.ndarray) -> np.ndarray:
    """Rank of each permutation among all permutations of 0..6 in lexicographic order (Lehmer code)."""
    n = perms.shape[1]
    rank = np.zeros(len(perms), dtype=np.int64)
    for i in range(n):
        smaller_after = (perms[:, i + 1 :] < perms[:, i : i + 1]).sum(axis=1)
        rank += smaller_after * math.factorial(n - 1 - i)
    return rank


# --- the documented hash -------------------------------------------------------------------------


def test_splitmix64_reference_values():
    # SplitMix64 seeded with 0: its first two outputs are the finaliser of 1 and 2 times the golden gamma.
    assert my_splitmix64(0) == 0xE220A8397B1DCDAF
    assert my_splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    for x in [0, 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF]:
        assert order._splitmix64(x) == my_splitmix64(x)


ROWS = [
    seed_row(),
    seed_row(rtt=-1.0, packet_error_count=3),
    seed_row(rtt=-0.0, msm_id=-5, event_time=dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)),
    seed_row(src_addr="2001:db8::1", dst_addr="2001:4860:4860::8888", ip_version=6, size=1500),
    seed_row(src_addr="::ffff:1.2.3.4", dst_addr="ff02::1", ip_version=6, msm_id=2**63 - 1),
    seed_row(src_addr="255.255.255.255", dst_addr="0.0.0.0", size=65535, packet_error_count=255, rtt=5e-324),
]


@pytest.mark.parametrize("row", ROWS)
def test_order_is_the_documented_hash(row):
    expected = my_order(row)
    tokens = encode_measurement(row)
    assert observed_order(tokens) == expected
    table = pa.Table.from_pylist([row], schema=synth.SCHEMA)
    assert observed_order(encode_table(table).tokens.tolist()) == expected


def test_seed_example_order():
    # Written out once (from my_order above), so a change of the function shows up in review:
    # msm_id, dst, rtt, timestamp, errors, size, src.
    assert observed_order(encode_measurement(seed_row())) == (6, 1, 2, 5, 4, 3, 0)
    assert len({my_order(r) for r in ROWS}) > 1


# --- determinism ---------------------------------------------------------------------------------


def test_same_row_same_order_every_time():
    first = encode_measurement(seed_row())
    for _ in range(5):
        assert encode_measurement(seed_row()) == first
        assert encode_measurement(dict(reversed(list(seed_row().items())))) == first  # key order is irrelevant


CHILD = """
import datetime as dt, json, sys
from tokenizer.measurement import encode_measurement
rows = json.loads(sys.stdin.read())
for r in rows:
    r["event_time"] = dt.datetime.fromisoformat(r["event_time"])
print(json.dumps([encode_measurement(r) for r in rows]))
"""


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_same_order_across_processes(hash_seed):
    rows = [dict(r, event_time=r["event_time"].isoformat()) for r in ROWS]
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, TZ="Asia/Tokyo")
    out = subprocess.run(
        [sys.executable, "-c", CHILD], input=json.dumps(rows), capture_output=True, text=True, env=env,
        check=True, timeout=60,
    )
    assert json.loads(out.stdout) == [encode_measurement(r) for r in ROWS]


@pytest.mark.parametrize(
    "field_values",
    [
        ("rtt", [float(i) / 8 for i in range(60)]),
        ("msm_id", list(range(1000, 1060))),
        ("event_time", [dt.datetime(2025, 6, 24, 12, 0, i, tzinfo=UTC) for i in range(60)]),
        ("src_addr", [f"192.0.2.{i}" for i in range(60)]),
        ("dst_addr", [f"8.8.{i}.8" for i in range(60)]),
        ("size", list(range(60))),
        ("packet_error_count", list(range(60))),
    ],
    ids=lambda fv: fv[0],
)
def test_order_depends_on_every_field(field_values):
    field, values = field_values
    orders = {observed_order(encode_measurement(seed_row(**{field: v}))) for v in values}
    assert len(orders) >= 50  # 60 draws out of 5040 orders: nearly all distinct


# --- coverage and uniformity over many rows -------------------------------------------------------


@pytest.fixture(scope="module")
def synth_orders() -> np.ndarray:
    enc = encode_table(synth.generate(200_000, seed=11))
    return observed_orders(enc.tokens)


def test_all_5040_orders_occur_about_uniformly(synth_orders):
    n = len(synth_orders)
    assert n > 199_000
    counts = np.bincount(lexicographic_rank(synth_orders), minlength=5040)
    assert len(counts) == 5040
    assert counts.min() > 0  # every order occurs
    expected = n / 5040
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # df = 5039: mean 5039, standard deviation about 100; the bound is eight deviations away.
    assert chi2 < 5039 + 8 * math.sqrt(2 * 5039), chi2
    assert counts.max() < 2.5 * expected


def test_each_block_in_each_position_about_equally(synth_orders):
    n = len(synth_orders)
    for pos in range(7):
        share = np.bincount(synth_orders[:, pos], minlength=7) / n
        assert np.all(np.abs(share - 1 / 7) < 0.01), (pos, share)


def test_lexicographic_rank_matches_the_permutation_table(synth_orders):
    sample = synth_orders[:2000]
    ranks = lexicographic_rank(sample)
    assert np.array_equal(np.asarray([ALL_ORDERS[r] for r in ranks]), sample)
    from tokenizer.vocab import PERMUTATIONS

    assert np.array_equal(PERMUTATIONS[ranks], sample)
