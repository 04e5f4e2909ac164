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
from tokenizer.order import MASK64, splitmix64, splitmix64_np
from tokenizer.vocab import BLOCK_ROLE, MEASUREMENT_START, NUM_BLOCKS, NUM_ORDERS, NUM_ROLES, PAD, PERMUTATIONS

# Field kinds for per-field evaluation. Byte tokens take the kind of their block; all role ids
# (including MeasurementStart and the address-family tokens) are one kind.
KIND_NAMES = ("src_addr", "dst_addr", "rtt", "size", "errors", "timestamp", "msm_id", "role")
NUM_KINDS = len(KIND_NAMES)
KIND_ROLE = NUM_KINDS - 1
KIND_PAD = -1

_IS_BLOCK_ROLE = np.zeros(PAD + 1, dtype=bool)
_IS_BLOCK_ROLE[BLOCK_ROLE] = True
_IS_STRUCTURE_ROLE = _IS_BLOCK_ROLE.copy()
_IS_STRUCTURE_ROLE[MEASUREMENT_START] = True
_ROLE_TO_KIND = np.full(NUM_ROLES, KIND_ROLE, dtype=np.int8)
_ROLE_TO_KIND[BLOCK_ROLE] = np.arange(NUM_BLOCKS, dtype=np.int8)


def _structure(flat: np.ndarray, seq_len: int):
    """Measurement starts (M,), block starts (M, 7), block lengths (M, 7) and the non-PAD count of a flat batch."""
    is_pad = flat == PAD
    # Roles are ~10 of a measurement's ~55 tokens: find them once, then work on the short list.
    roles = np.flatnonzero(flat < NUM_ROLES)  # (R,) positions of role tokens, sorted
    role_ids = flat[roles].astype(np.intp)  # (R,)
    keep = _IS_STRUCTURE_ROLE[role_ids]  # MeasurementStart and block roles; not the address-family tokens
    ids, pos = role_ids[keep], roles[keep]  # (M * 8,)
    m = int(np.count_nonzero(ids == MEASUREMENT_START))
    if len(ids) != (NUM_BLOCKS + 1) * m:
        raise DecodeError(f"{m} measurements but {len(ids) - m} field blocks (expected {NUM_BLOCKS} each)")
    ids, pos = ids.reshape(m, NUM_BLOCKS + 1), pos.reshape(m, NUM_BLOCKS + 1)  # (M, 8)
    # Only MeasurementStart has id 0, so each row must be one MeasurementStart then seven block roles.
    if m and (np.any(ids[:, 0] != MEASUREMENT_START) or np.any(ids[:, 1:] == MEASUREMENT_START)):
        raise DecodeError("field blocks are not grouped seven to a measurement")
    meas, blocks = pos[:, 0], np.ascontiguousarray(pos[:, 1:])  # (M,), (M, 7)
    if m and not np.array_equal(blocks[:, 0], meas + 1):
        raise DecodeError("a MeasurementStart must be followed directly by a field block")
    # End of each record's body: its first PAD, or the record's end.
    rows = is_pad.reshape(-1, seq_len)  # (B, L)
    body_len = np.where(rows.any(axis=1), rows.argmax(axis=1), seq_len)  # (B,)
    body_end = np.arange(len(rows)) * seq_len + body_len  # (B,)
    # A block ends where the next block starts; a measurement's last block where the next measurement
    # starts, or at its record's body end when that comes first (the next measurement is in another record).
    ends = np.empty_like(blocks)  # (M, 7)
    ends[:, :-1] = blocks[:, 1:]
    next_meas = np.append(meas[1:], np.iinfo(np.int64).max)  # (M,)
    ends[:, -1] = np.minimum(next_meas, body_end[meas // seq_len]) if m else 0
    lengths = ends - blocks  # (M, 7)
    if m and lengths.min() < 2:  # every block is a role and at least one byte
        raise DecodeError("a field block is cut short (PAD inside a measurement)")
    return meas, blocks, lengths, len(flat) - int(np.count_nonzero(is_pad))


# The data-order scheme, recorded in every checkpoint: a run never changes its data order silently.
# "hash-v1": the order of measurement k of the record at global read index i is
# splitmix64(splitmix64(splitmix64(seed) ^ i) ^ k) mod 5040 (all modulo 2**64), and the global shuffle is
# trainer.data.shuffled_keys (one numpy permutation per epoch, computed for a batch by a gather). The scheme before it (Grain's per-record
# shuffle, a numpy Generator per record; checkpoints without a recorded scheme) is not kept.
AUGMENT_SCHEME = "hash-v1"


def draw_orders(seed: int, indices: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Order indices (0..5039) for ``counts[b]`` measurements of each record, in reading order.

    Counter-based (:data:`AUGMENT_SCHEME`): measurement ``k`` of the record read at global index
    ``indices[b]`` gets a pure hash of ``(seed, indices[b], k)``, so the same record read at the same
    position always gets the same orders, whichever worker reads it; no per-record Python work.
    """
    indices = np.asarray(indices, dtype=np.int64).astype(np.uint64)  # (B,)
    counts = np.asarray(counts, dtype=np.int64)  # (B,)
    per_record = splitmix64_np(np.uint64(splitmix64(int(seed) & MASK64)) ^ indices)  # (B,)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts  # (B,) offset of each record's first measurement
    k = (np.arange(total, dtype=np.int64) - np.repeat(first, counts)).astype(np.uint64)  # (M,) k within record
    h = splitmix64_np(np.repeat(per_record, counts) ^ k)  # (M,)
    return (h % np.uint64(NUM_ORDERS)).astype(np.int64)


def permute_fields(tokens: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Rewrite every measurement of ``tokens`` ((B, L) or (L,)) with its field blocks in a new order.

    ``orders`` holds one order index into ``PERMUTATIONS`` per measurement, in reading order. Each
    measurement keeps its span; PAD stays where it is. Raises :class:`DecodeError` on a malformed record.
    """
    tokens = np.asarray(tokens)
    seq_len = tokens.shape[-1]
    flat = tokens.reshape(-1)  # (B * L,)
    meas, starts, lengths, nonpad = _structure(flat, seq_len)
    m = len(meas)
    if len(orders) != m:
        raise ValueError(f"{len(orders)} orders for {m} measurements")
    perm = PERMUTATIONS[np.asarray(orders, dtype=np.intp)]  # (M, 7)
    # Eight segments per measurement: its MeasurementStart, then the seven blocks in the new order.
    seg_start = np.empty((m, NUM_BLOCKS + 1), np.int64)  # (M, 8) input position of each segment
    seg_start[:, 0] = meas
    seg_start[:, 1:] = np.take_along_axis(starts, perm, axis=1)
    seg_len = np.ones((m, NUM_BLOCKS + 1), np.int64)  # (M, 8)
    seg_len[:, 1:] = np.take_along_axis(lengths, perm, axis=1)
    span = seg_len.sum(axis=1)  # (M,) a measurement keeps its span
    if int(span.sum()) != nonpad:
        raise DecodeError(f"{nonpad - int(span.sum())} non-PAD tokens lie outside any measurement")
    out_start = meas[:, None] + np.cumsum(seg_len, axis=1) - seg_len  # (M, 8) output position of each segment
    shift = seg_start - out_start  # (M, 8) input minus output position, constant over a segment; 0 for column 0
    # Output position p reads input position p + shift(p): write the shift's steps at segment starts
    # (and back to 0 at each measurement's end) and integrate. No collisions: a measurement's end is
    # the next one's MeasurementStart, whose step (0) is not written.
    steps = np.zeros(len(flat) + 1, np.int64)  # (B * L + 1,)
    steps[out_start[:, 1:]] = np.diff(shift, axis=1)
    steps[meas + span] = -shift[:, -1]
    source = np.arange(len(flat)) + np.cumsum(steps[:-1])  # (B * L,)
    return flat[source].reshape(tokens.shape)


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
