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


# Role ids below NUM_ROLES that do not delimit blocks (the address-family tokens inside address blocks).
_INNER_ROLES = tuple(int(r) for r in np.flatnonzero(~_IS_STRUCTURE_ROLE[:NUM_ROLES]))


def _structure(flat: np.ndarray, seq_len: int):
    """Measurement starts (M,), block starts (M, 7), block lengths (M, 7) and the non-PAD count of a flat batch."""
    # MeasurementStart and the block roles are ~8 of a measurement's ~55 tokens: one pass of cheap
    # comparisons over the batch marks them, and every later step works on the short list of positions
    # (boolean indexing of a longer role list cost more than these comparisons).
    marks = flat < NUM_ROLES
    for role in _INNER_ROLES:
        marks &= flat != role
    pos = np.flatnonzero(marks)  # (M * 8,) positions of MeasurementStart and block roles, sorted
    ids = flat[pos]  # (M * 8,)
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
    is_pad = flat == PAD
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
    flat = tokens.reshape(-1)  # (B * L,)
    structure = _structure(flat, tokens.shape[-1])
    return np.take(flat, _source(len(flat), *structure, orders)).reshape(tokens.shape)


def _source(n: int, meas: np.ndarray, starts: np.ndarray, lengths: np.ndarray, nonpad: int,
            orders: np.ndarray) -> np.ndarray:
    """Output position p -> the input position it copies (n,), for the blocks reordered by ``orders``.

    The output is a run of segments, each a copy of consecutive input tokens: whatever precedes the
    first measurement, then per measurement its MeasurementStart, its seven blocks in the new order, and
    the gap up to the next measurement (PAD; records without measurements) copied in place. A segment's
    input start minus its output start, repeated over its length (``np.repeat``), plus the position, is
    the source: three passes over the batch with no cumulative sum over it (numpy's cumsum costs about
    3 ns a token, a third of the whole augmentation).
    """
    m = len(meas)
    if len(orders) != m:
        raise ValueError(f"{len(orders)} orders for {m} measurements")
    end = starts[:, -1] + lengths[:, -1]  # (M,) the blocks tile the measurement, so its last block ends it
    span = end - meas  # (M,) a measurement keeps its span
    if int(span.sum()) != nonpad:
        raise DecodeError(f"{nonpad - int(span.sum())} non-PAD tokens lie outside any measurement")
    pick = _PERMUTATIONS_INTP[np.asarray(orders, dtype=np.intp)]  # (M, 7) block j of the output is block pick[j]
    pick += (np.arange(m) * NUM_BLOCKS)[:, None]  # (M, 7) into the flattened (M, 7) arrays
    seg_in = np.empty((m, NUM_BLOCKS + 2), np.int64)  # (M, 9) input start of each segment
    seg_len = np.empty((m, NUM_BLOCKS + 2), np.int64)  # (M, 9)
    seg_in[:, 0], seg_len[:, 0] = meas, 1
    seg_in[:, 1:-1] = starts.reshape(-1)[pick]
    seg_len[:, 1:-1] = lengths.reshape(-1)[pick]
    seg_in[:, -1] = end
    seg_len[:, -1] = np.append(meas[1:], n) - end
    first = meas[0] if m else n  # tokens before the first measurement (PAD records), in place
    seg_in = np.concatenate([[0], seg_in.reshape(-1)])  # (S,)
    seg_len = np.concatenate([[first], seg_len.reshape(-1)])  # (S,) sums to n
    seg_out = np.cumsum(seg_len) - seg_len  # (S,) output start of each segment
    source = np.repeat(seg_in - seg_out, seg_len)  # (n,) input minus output position
    source += _positions(n)
    return source


_PERMUTATIONS_INTP = PERMUTATIONS.astype(np.intp)  # (5040, 7) as index arrays (int8 would be widened per batch)
_POSITIONS: dict[int, np.ndarray] = {}


def _positions(n: int) -> np.ndarray:
    """``np.arange(n)``, kept for the last size asked (one batch shape per stream)."""
    if n not in _POSITIONS:
        _POSITIONS.clear()
        _POSITIONS[n] = np.arange(n, dtype=np.int64)
        _POSITIONS[n].flags.writeable = False
    return _POSITIONS[n]


def augment_batch(tokens: np.ndarray, seed: int, indices: np.ndarray) -> np.ndarray:
    """Permute the field blocks of a (B, L) batch; record ``b`` draws its orders from ``(seed, indices[b])``."""
    tokens = np.asarray(tokens)
    b, seq_len = tokens.shape
    flat = tokens.reshape(-1)  # (B * L,)
    structure = _structure(flat, seq_len)
    counts = np.bincount(structure[0] // seq_len, minlength=b)  # (B,) measurements per record
    orders = draw_orders(seed, indices, counts)
    return np.take(flat, _source(len(flat), *structure, orders)).reshape(tokens.shape)


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
