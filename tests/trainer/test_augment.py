"""Field-order augmentation and field kinds (trainer/augment.py)."""

from __future__ import annotations

import datetime as dt
import itertools

import grain
import numpy as np
import pytest

from beam_pipelines.common.hashing import splitmix64
from tokenizer import PAD, decode_measurement, encode_measurement, split_measurements
from tokenizer.errors import DecodeError
from tokenizer.vocab import MEASUREMENT_START, PERMUTATIONS
from trainer import augment, data, eval_stream
from trainer.config import load_config


def _row(i: int, version: int = 4) -> dict:
    return {
        "msm_id": 1000 + i,
        "event_time": dt.datetime(2025, 6, 24, 12, 0, i, tzinfo=dt.timezone.utc),
        "src_addr": f"192.0.2.{i + 1}" if version == 4 else f"2001:db8::{i + 1:x}",
        "dst_addr": "8.8.8.8" if version == 4 else "2001:4860:4860::8888",
        "ip_version": version,
        "rtt": 10.5 + i,
        "size": 64,
        "packet_error_count": i % 3,
    }


def _record(rows: list[dict], seq_len: int = 256) -> np.ndarray:
    tokens = np.concatenate([np.array(encode_measurement(r), dtype=np.uint16) for r in rows])
    out = np.full(seq_len, PAD, dtype=np.uint16)
    out[: len(tokens)] = tokens
    return out


def _decoded(record: np.ndarray) -> list[dict]:
    return [decode_measurement(m) for m in split_measurements(record)]


@pytest.fixture(scope="module")
def sample_records(sample_dataset) -> np.ndarray:
    config = load_config("tiny")
    ds = data.open_dataset(str(sample_dataset), config)
    source = grain.sources.ArrayRecordDataSource(ds.files("train"))
    return np.stack([eval_stream.parse_record(source[i], ds.seq_len) for i in range(8)])  # (8, 1024)


def test_identity_order_leaves_records_unchanged():
    record = _record([_row(0), _row(1, 6), _row(2)])
    assert np.array_equal(augment.permute_fields(record, np.zeros(3, dtype=np.int64)), record)


def test_permutation_moves_blocks_and_decodes_to_the_same_measurements():
    rows = [_row(0), _row(1, 6), _row(2)]
    record = _record(rows)
    out = augment.permute_fields(record, np.array([5039, 1234, 77]))
    assert not np.array_equal(out, record)
    assert _decoded(out) == _decoded(record)
    assert np.array_equal(out == PAD, record == PAD)  # PAD stays a suffix, lengths unchanged
    assert np.array_equal(out == MEASUREMENT_START, record == MEASUREMENT_START)
    # The last order reverses the blocks: the first block after MeasurementStart is now the last one.
    first = split_measurements(record)[0]
    moved = split_measurements(out)[0]
    roles = [t for t in first if t in (1, 2, 5, 6, 7, 8, 9)]
    assert [t for t in moved if t in (1, 2, 5, 6, 7, 8, 9)] == roles[::-1]
    assert PERMUTATIONS[5039].tolist() == [6, 5, 4, 3, 2, 1, 0]


def test_augmented_sample_batches_decode_to_the_same_measurement_sets(sample_records):
    out = augment.augment_batch(sample_records, seed=7, indices=np.arange(8))
    changed = 0
    for before, after in zip(sample_records, out):
        key = lambda m: (m["msm_id"], m["event_time"], m["src_addr"], m["dst_addr"], m["rtt"])  # noqa: E731
        assert sorted(_decoded(after), key=key) == sorted(_decoded(before), key=key)
        changed += int(not np.array_equal(before, after))
    assert changed == 8


def test_augmentation_is_deterministic_in_seed_and_read_index(sample_records):
    a = augment.augment_batch(sample_records, seed=3, indices=np.arange(8))
    assert np.array_equal(a, augment.augment_batch(sample_records, seed=3, indices=np.arange(8)))
    # One record's orders depend only on (seed, its index), not on its batch neighbours.
    alone = augment.augment_batch(sample_records[5:6], seed=3, indices=np.array([5]))
    assert np.array_equal(alone[0], a[5])
    # Another read of the same record (a later epoch) or another seed gives other orders.
    assert not np.array_equal(a, augment.augment_batch(sample_records, seed=3, indices=np.arange(8) + 1000))
    assert not np.array_equal(a, augment.augment_batch(sample_records, seed=4, indices=np.arange(8)))


def test_orders_cover_many_permutations():
    orders = augment.draw_orders(0, np.arange(200), np.full(200, 20))
    assert orders.min() >= 0 and orders.max() < 5040
    assert len(np.unique(orders)) > 2000


def test_malformed_records_are_refused():
    record = _record([_row(0), _row(1)])
    broken = record.copy()
    broken[1] = 20  # the first block role becomes a byte token
    with pytest.raises(DecodeError):
        augment.permute_fields(broken, np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError):
        augment.permute_fields(record, np.zeros(3, dtype=np.int64))


def test_field_kinds_of_a_hand_made_measurement():
    row = _row(0)
    tokens = np.array(encode_measurement(row), dtype=np.uint16)
    kinds = augment.field_kinds(np.concatenate([tokens, [PAD, PAD]])[None])[0]
    assert kinds[0] == augment.KIND_ROLE and list(kinds[-2:]) == [augment.KIND_PAD] * 2
    names = {1: "src_addr", 2: "dst_addr", 5: "rtt", 6: "size", 7: "errors", 8: "timestamp", 9: "msm_id"}
    expected_bytes = {"src_addr": 4, "dst_addr": 4, "rtt": 8, "size": 2, "errors": 1, "timestamp": 8, "msm_id": 8}
    for role, name in names.items():
        start = int(np.flatnonzero(tokens == role)[0])
        assert kinds[start] == augment.KIND_ROLE
        kind = augment.KIND_NAMES.index(name)
        assert (kinds[: len(tokens)] == kind).sum() == expected_bytes[name]
        first_byte = start + (2 if role in (1, 2) else 1)  # address blocks carry a family role token
        assert kinds[first_byte] == kind
    assert (kinds[: len(tokens)] == augment.KIND_ROLE).sum() == 1 + 7 + 2  # start, block roles, two family tokens


# ---- the counter-based scheme against a per-record reference written from its definition

_BLOCK_ROLES = (1, 2, 5, 6, 7, 8, 9)


def _reference_order(seed: int, index: int, k: int) -> int:
    """The documented hash, one measurement at a time with Python ints."""
    return splitmix64(splitmix64(splitmix64(seed) ^ index) ^ k) % 5040


def _reference_augment(record: np.ndarray, seed: int, index: int) -> np.ndarray:
    """One record, measurement by measurement: cut at block roles, reorder by PERMUTATIONS[order]."""
    out = []
    for k, meas in enumerate(split_measurements(record)):
        meas = meas.tolist()
        cuts = [i for i, t in enumerate(meas) if t in _BLOCK_ROLES] + [len(meas)]
        blocks = [meas[a:b] for a, b in itertools.pairwise(cuts)]
        order = PERMUTATIONS[_reference_order(seed, index, k)]
        out += [meas[0]] + [t for j in order for t in blocks[j]]
    result = np.full_like(record, PAD)
    result[: len(out)] = out
    return result


def test_batch_augmentation_equals_the_per_record_reference(sample_records):
    indices = np.array([0, 1, 5, 1000, 2**40 + 3, 7, 12345, 2**62])
    for seed in (0, 3, 2**63 + 5):
        out = augment.augment_batch(sample_records, seed=seed, indices=indices)
        for b in range(len(sample_records)):
            assert np.array_equal(out[b], _reference_augment(sample_records[b], seed, int(indices[b]))), (seed, b)


def test_padding_records_and_short_bodies_equal_the_reference(sample_records):
    """Rows of PAD only (before, between and after records) and bodies cut short stay in place."""
    batch = np.full((6, sample_records.shape[1]), PAD, np.uint16)  # rows 0, 3 and 5 are all PAD
    batch[1] = sample_records[0]
    batch[2] = _record([_row(3), _row(4, 6)], seq_len=sample_records.shape[1])
    batch[4] = sample_records[1]
    indices = np.array([4, 9, 2**33, 7, 0, 12])
    out = augment.augment_batch(batch, seed=5, indices=indices)
    for b in range(len(batch)):
        assert np.array_equal(out[b], _reference_augment(batch[b], 5, int(indices[b]))), b
    assert np.all(out[[0, 3, 5]] == PAD)
    assert np.array_equal(augment.augment_batch(batch[[0]], seed=5, indices=indices[:1]), batch[[0]])


def test_draw_orders_equal_the_scalar_hash():
    counts = np.array([3, 0, 5, 1])
    indices = np.array([10, 11, 12, 2**50])
    want = [_reference_order(9, int(i), k) for i, c in zip(indices, counts) for k in range(c)]
    assert augment.draw_orders(9, indices, counts).tolist() == want
    assert augment.draw_orders(9, np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []
