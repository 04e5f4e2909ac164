"""Field-order augmentation and field kinds of packed records (pure numpy, vectorized over a batch).

A record is whole measurements followed by PAD; the dataset's tokenizer scheme finds each measurement's
permutable field blocks (v1: ``Scheme.block_structure``, seven blocks after ``MeasurementStart``; other
schemes: ``Parsed.blocks`` of the record parser). The pretokenizer writes each measurement's blocks in one
frozen order; :func:`permute_fields` reorders them afresh so every epoch shows the model other orders of
the same measurements.
"""

from __future__ import annotations

import numpy as np

from beam_pipelines.common.hashing import MASK64, splitmix64, splitmix64_np
from tokenizer import get_scheme
from tokenizer.errors import DecodeError

# Field kinds for per-field evaluation. Byte tokens take the kind of their block; all role ids
# (including MeasurementStart and the address-family tokens) are one kind.
KIND_NAMES = ("src_addr", "dst_addr", "rtt", "size", "errors", "timestamp", "msm_id", "role")
NUM_KINDS = len(KIND_NAMES)
KIND_ROLE = NUM_KINDS - 1
KIND_PAD = -1

_V1 = get_scheme("v1")
NUM_ORDERS = len(_V1.field_orders)  # v1's 5040 orders of seven blocks


# The data-order scheme, recorded in every checkpoint: a run never changes its data order silently.
# "hash-v1": the order of measurement k of the record at global read index i is
# splitmix64(splitmix64(splitmix64(seed) ^ i) ^ k) mod 5040 (all modulo 2**64), and the global shuffle is
# trainer.shuffle.shuffled_keys (one numpy permutation per epoch, computed for a batch by a gather). The scheme before it (Grain's per-record
# shuffle, a numpy Generator per record; checkpoints without a recorded scheme) is not kept.
AUGMENT_SCHEME = "hash-v1"


def draw_orders(seed: int, indices: np.ndarray, counts: np.ndarray, num_orders: int = NUM_ORDERS,
                eval_share: float = 0.0, eval_order: int = 0) -> np.ndarray:
    """Order indices (0..5039) for ``counts[b]`` measurements of each record, in reading order.

    Counter-based (:data:`AUGMENT_SCHEME`): measurement ``k`` of the record read at global index
    ``indices[b]`` gets a pure hash of ``(seed, indices[b], k)``, so the same record read at the same
    position always gets the same orders, whichever worker reads it; no per-record Python work.

    ``num_orders``: the scheme's orders (v1: 5040). ``eval_share`` > 0: a measurement keeps ``eval_order``
    (the order evaluation asks in) when a second hash of the same counter falls below that share.
    """
    indices = np.asarray(indices, dtype=np.int64).astype(np.uint64)  # (B,)
    counts = np.asarray(counts, dtype=np.int64)  # (B,)
    per_record = splitmix64_np(np.uint64(splitmix64(int(seed) & MASK64)) ^ indices)  # (B,)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts  # (B,) offset of each record's first measurement
    k = (np.arange(total, dtype=np.int64) - np.repeat(first, counts)).astype(np.uint64)  # (M,) k within record
    h = splitmix64_np(np.repeat(per_record, counts) ^ k)  # (M,)
    orders = (h % np.uint64(num_orders)).astype(np.int64)
    if eval_share > 0:
        u = splitmix64_np(h ^ np.uint64(_EVAL_SALT)).astype(np.float64) / 2.0**64  # (M,) uniform in [0, 1)
        orders[u < eval_share] = eval_order
    return orders


_EVAL_SALT = 0x5EED0F0E7A1  # separates the eval-order draw from the order draw of the same counter


def permute_fields(tokens: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Rewrite every measurement of ``tokens`` ((B, L) or (L,)) with its field blocks in a new order.

    ``orders`` holds one order index into ``PERMUTATIONS`` per measurement, in reading order. Each
    measurement keeps its span; PAD stays where it is. Raises :class:`DecodeError` on a malformed record.
    """
    tokens = np.asarray(tokens)
    flat = tokens.reshape(-1)  # (B * L,)
    structure = _V1.block_structure(flat, tokens.shape[-1])
    return np.take(flat, _source(len(flat), *structure, orders)).reshape(tokens.shape)


def _source(n: int, meas: np.ndarray, starts: np.ndarray, lengths: np.ndarray, nonpad: int,
            orders: np.ndarray, prefix: np.ndarray | int = 1, table: np.ndarray | None = None) -> np.ndarray:
    """Output position p -> the input position it copies (n,), for the blocks reordered by ``orders``.

    The output is a run of segments, each a copy of consecutive input tokens: whatever precedes the
    first measurement, then per measurement its prefix (``prefix`` tokens from its start: v1's
    MeasurementStart), its K blocks in the new order (``table[orders]``, by default v1's 5040 orders of
    seven), and the gap up to the next measurement (PAD; records without measurements) copied in place. A segment's
    input start minus its output start, repeated over its length (``np.repeat``), plus the position, is
    the source: three passes over the batch with no cumulative sum over it (numpy's cumsum costs about
    3 ns a token, a third of the whole augmentation).
    """
    m = len(meas)
    if len(orders) != m:
        raise ValueError(f"{len(orders)} orders for {m} measurements")
    table = _PERMUTATIONS_INTP if table is None else table
    k = starts.shape[1]
    end = (starts + lengths).max(axis=1) if m else np.zeros(0, np.int64)  # (M,) the blocks tile the measurement
    span = end - meas  # (M,) a measurement keeps its span
    if int(span.sum()) != nonpad:
        raise DecodeError(f"{nonpad - int(span.sum())} non-PAD tokens lie outside any measurement")
    pick = table[np.asarray(orders, dtype=np.intp)]  # (M, K) block j of the output is block pick[j]
    pick += (np.arange(m) * k)[:, None]  # (M, K) into the flattened (M, K) arrays
    seg_in = np.empty((m, k + 2), np.int64)  # (M, K + 2) input start of each segment
    seg_len = np.empty((m, k + 2), np.int64)  # (M, K + 2)
    seg_in[:, 0], seg_len[:, 0] = meas, prefix
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


_PERMUTATIONS_INTP = _V1.field_orders.astype(np.intp)  # (5040, 7) as index arrays (int8 would be widened per batch)
_POSITIONS: dict[int, np.ndarray] = {}


def _positions(n: int) -> np.ndarray:
    """``np.arange(n)``, kept for the last size asked (one batch shape per stream)."""
    if n not in _POSITIONS:
        _POSITIONS.clear()
        _POSITIONS[n] = np.arange(n, dtype=np.int64)
        _POSITIONS[n].flags.writeable = False
    return _POSITIONS[n]


def augment_batch(tokens: np.ndarray, seed: int, indices: np.ndarray, scheme=None, eval_share: float = 0.0
                  ) -> np.ndarray:
    """Permute the field blocks of a (B, L) batch; record ``b`` draws its orders from ``(seed, indices[b])``.

    ``scheme``: the dataset's tokenizer scheme (None: v1). ``eval_share``: the share of measurements left
    in (put into) the order evaluation asks in (``Scheme.eval_order``: addresses first, RTT last).
    """
    tokens = np.asarray(tokens)
    if (scheme is not None and scheme.name != "v1") or eval_share > 0:
        return _augment_parsed(tokens, seed, indices, scheme or get_scheme("v1"), eval_share)
    b, seq_len = tokens.shape
    flat = tokens.reshape(-1)  # (B * L,)
    structure = _V1.block_structure(flat, seq_len)
    counts = np.bincount(structure[0] // seq_len, minlength=b)  # (B,) measurements per record
    orders = draw_orders(seed, indices, counts)
    return np.take(flat, _source(len(flat), *structure, orders)).reshape(tokens.shape)


def _augment_parsed(tokens: np.ndarray, seed: int, indices: np.ndarray, scheme, eval_share: float) -> np.ndarray:
    """:func:`augment_batch` through the scheme's record parser: each measurement's blocks (``Parsed.blocks``,
    canonical order) are laid out in an order drawn from the scheme's ``field_orders``; the prefix before the
    first block (v2: a run's source header and the time) stays in place."""
    b, seq_len = tokens.shape
    flat = tokens.reshape(-1)  # (B * L,)
    parsed = scheme.parse_records(tokens)
    starts = parsed.blocks  # (M, K) canonical order
    meas = parsed.record * seq_len + parsed.start  # (M,) flat
    end = parsed.record * seq_len + parsed.end  # (M,)
    by_pos = np.sort(starts, axis=1)  # (M, K) as stored
    ends_sorted = np.concatenate([by_pos[:, 1:], end[:, None]], axis=1)  # (M, K)
    rank = np.argsort(np.argsort(starts, axis=1), axis=1)  # (M, K) each canonical block's place as stored
    lengths = np.take_along_axis(ends_sorted, rank, axis=1) - starts  # (M, K)
    nonpad = len(flat) - int(np.count_nonzero(flat == scheme.pad_id))
    counts = np.bincount(parsed.record, minlength=b)  # (B,)
    table = scheme.field_orders.astype(np.intp)
    orders = draw_orders(seed, indices, counts, len(table), eval_share, scheme.eval_order)
    source = _source(len(flat), meas, starts, lengths, nonpad, orders, by_pos[:, 0] - meas, table)
    return np.take(flat, source).reshape(tokens.shape)


def field_kinds(tokens: np.ndarray, scheme=None) -> np.ndarray:
    """Kind (index into ``KIND_NAMES``) of every token of a (B, L) batch; PAD is ``KIND_PAD`` (-1).

    ``scheme``: the dataset's tokenizer scheme (None: v1); a token counts as the kind of the block it is in
    (``Scheme.kind_names`` of the latest block start at or before it)."""
    return _scheme_kinds(np.asarray(tokens), scheme or _V1)


def _scheme_kinds(tokens: np.ndarray, scheme) -> np.ndarray:
    b, seq_len = tokens.reshape(-1, tokens.shape[-1]).shape
    t = tokens.reshape(b, seq_len).astype(np.int64)  # (B, L)
    spec = scheme.field_spec
    opens = spec.block_kind[np.minimum(t, len(spec.block_kind) - 1)]  # (B, L) kind a token opens, -1 none
    positions = np.broadcast_to(np.arange(seq_len), (b, seq_len))  # (B, L)
    last = np.maximum.accumulate(np.where(opens >= 0, positions, -1), axis=1)  # (B, L)
    kind = np.take_along_axis(opens, np.maximum(last, 0), axis=1)  # (B, L)
    to_kind = np.array([KIND_NAMES.index(name) for name in scheme.kind_names], np.int8)
    kinds = np.where(last >= 0, to_kind[np.maximum(kind, 0)], KIND_ROLE)
    kinds = np.where(scheme.structural_ids[np.minimum(t, len(spec.block_kind) - 1)], KIND_ROLE, kinds)
    kinds = np.where(t == scheme.pad_id, KIND_PAD, kinds)
    return kinds.astype(np.int8).reshape(tokens.shape)
