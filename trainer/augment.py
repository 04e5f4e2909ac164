"""Field-order augmentation and field kinds of packed records (pure numpy, vectorized over a batch).

A record is whole measurements followed by PAD. Role tokens make its structure explicit: a measurement
starts at ``MeasurementStart`` (0) and each of its seven field blocks at one of the block roles
(1, 2, 5, 6, 7, 8, 9; ``Ipv4Start``/``Ipv6Start`` sit *inside* address blocks). The pretokenizer writes
each measurement's blocks in one frozen, content-derived order; :func:`permute_fields` reorders them
afresh so every epoch shows the model other orders of the same measurements.
"""

from __future__ import annotations

import numpy as np

from tokenizer.errors import DecodeError
from tokenizer.vocab import BLOCK_ROLE, MEASUREMENT_START, NUM_BLOCKS, NUM_ORDERS, NUM_ROLES, PAD, PERMUTATIONS

# Field kinds for per-field evaluation. Byte tokens take the kind of their block; all role ids
# (including MeasurementStart and the address-family tokens) are one kind.
KIND_NAMES = ("src_addr", "dst_addr", "rtt", "size", "errors", "timestamp", "msm_id", "role")
NUM_KINDS = len(KIND_NAMES)
KIND_ROLE = NUM_KINDS - 1
KIND_PAD = -1

_IS_BLOCK_ROLE = np.zeros(PAD + 1, dtype=bool)
_IS_BLOCK_ROLE[BLOCK_ROLE] = True
_ROLE_TO_KIND = np.full(NUM_ROLES, KIND_ROLE, dtype=np.int8)
_ROLE_TO_KIND[BLOCK_ROLE] = np.arange(NUM_BLOCKS, dtype=np.int8)


def _structure(flat: np.ndarray, seq_len: int):
    """Measurement starts, block starts (M, 7), block lengths (M, 7) and non-PAD positions of a flat batch."""
    is_pad = flat == PAD
    meas = np.flatnonzero(flat == MEASUREMENT_START)  # (M,)
    blocks = np.flatnonzero(_IS_BLOCK_ROLE[flat])  # (M * 7,)
    m = len(meas)
    if len(blocks) != NUM_BLOCKS * m:
        raise DecodeError(f"{m} measurements but {len(blocks)} field blocks (expected {NUM_BLOCKS} each)")
    owner = np.searchsorted(meas, blocks, side="right") - 1  # measurement of each block
    if m and not np.array_equal(owner, np.repeat(np.arange(m), NUM_BLOCKS)):
        raise DecodeError("field blocks are not grouped seven to a measurement")
    blocks = blocks.reshape(m, NUM_BLOCKS)  # (M, 7)
    if m and not np.array_equal(blocks[:, 0], meas + 1):
        raise DecodeError("a MeasurementStart must be followed directly by a field block")
    # End of each record's body: its first PAD, or the record's end.
    rows = is_pad.reshape(-1, seq_len)  # (B, L)
    body_len = np.where(rows.any(axis=1), rows.argmax(axis=1), seq_len)  # (B,)
    body_end = np.arange(len(rows)) * seq_len + body_len  # (B,)
    boundaries = np.sort(np.concatenate([meas, blocks.ravel(), body_end]))
    ends = boundaries[np.searchsorted(boundaries, blocks.ravel(), side="right")].reshape(m, NUM_BLOCKS)  # (M, 7)
    return meas, blocks, ends - blocks, np.flatnonzero(~is_pad)


def draw_orders(seed: int, indices: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Order indices (0..5039) for ``counts[b]`` measurements of each record, from a Generator seeded by
    ``(seed, indices[b])``: the same record read at the same position always gets the same orders."""
    draws = [
        np.random.default_rng((int(seed), int(index))).integers(0, NUM_ORDERS, size=int(count))
        for index, count in zip(indices, counts)
    ]
    return np.concatenate(draws) if draws else np.zeros(0, dtype=np.int64)


def permute_fields(tokens: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Rewrite every measurement of ``tokens`` ((B, L) or (L,)) with its field blocks in a new order.

    ``orders`` holds one order index into ``PERMUTATIONS`` per measurement, in reading order. Each
    measurement keeps its span; PAD stays where it is. Raises :class:`DecodeError` on a malformed record.
    """
    tokens = np.asarray(tokens)
    seq_len = tokens.shape[-1]
    flat = tokens.reshape(-1)  # (B * L,)
    meas, starts, lengths, body = _structure(flat, seq_len)
    m = len(meas)
    if len(orders) != m:
        raise ValueError(f"{len(orders)} orders for {m} measurements")
    perm = PERMUTATIONS[np.asarray(orders, dtype=np.int64)]  # (M, 7)
    # Eight segments per measurement: its MeasurementStart, then the seven blocks in the new order.
    seg_start = np.concatenate([meas[:, None], np.take_along_axis(starts, perm, axis=1)], axis=1)  # (M, 8)
    seg_len = np.concatenate([np.ones((m, 1), np.int64), np.take_along_axis(lengths, perm, axis=1)], axis=1)  # (M, 8)
    seg_start, seg_len = seg_start.ravel(), seg_len.ravel()  # (M * 8,)
    total = int(seg_len.sum())
    if total != len(body):
        raise DecodeError(f"{len(body) - total} non-PAD tokens lie outside any measurement")
    first = np.cumsum(seg_len) - seg_len  # (M * 8,) output offset of each segment
    source = np.repeat(seg_start - first, seg_len) + np.arange(total)  # (total,) input position per output
    out = flat.copy()
    out[body] = flat[source]
    return out.reshape(tokens.shape)


def augment_batch(tokens: np.ndarray, seed: int, indices: np.ndarray) -> np.ndarray:
    """Permute the field blocks of a (B, L) batch; record ``b`` draws its orders from ``(seed, indices[b])``."""
    counts = (tokens == MEASUREMENT_START).sum(axis=1)  # (B,)
    return permute_fields(tokens, draw_orders(seed, indices, counts))


def field_kinds(tokens: np.ndarray) -> np.ndarray:
    """Kind (index into ``KIND_NAMES``) of every token of a (B, L) batch; PAD is ``KIND_PAD`` (-1)."""
    tokens = np.asarray(tokens)
    b, seq_len = tokens.reshape(-1, tokens.shape[-1]).shape
    t = tokens.reshape(b, seq_len).astype(np.int64)  # (B, L)
    positions = np.broadcast_to(np.arange(seq_len), (b, seq_len))  # (B, L)
    is_block = _IS_BLOCK_ROLE[t]
    # Position of the latest block role at or before each token (records start with a role, so -1 only before it).
    last = np.maximum.accumulate(np.where(is_block, positions, -1), axis=1)  # (B, L)
    block_role = np.take_along_axis(t, np.maximum(last, 0), axis=1)  # (B, L)
    kinds = np.where(t < NUM_ROLES, KIND_ROLE, _ROLE_TO_KIND[np.minimum(block_role, NUM_ROLES - 1)])
    kinds = np.where(t == PAD, KIND_PAD, kinds)
    return kinds.astype(np.int8).reshape(tokens.shape)
