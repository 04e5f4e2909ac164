"""The token grammar of one measurement (scheme v1) as a small state machine, vectorized over a batch.

Pure numpy. Used by constrained sampling (``trainer.eval.sampling``: at every step only tokens the grammar
allows may be drawn, so every sample decodes) and by tests. The grammar of one measurement:

    MeasurementStart, then the seven field blocks, each exactly once, in any order:
      src  [SrcIpStart,  Ipv4Start|Ipv6Start, 4|16 bytes]
      dst  [DestIpStart, Ipv4Start|Ipv6Start, 4|16 bytes]   (same family as src)
      rtt  [RttStart, 8 bytes]      size [SizeStart, 2 bytes]     errors [ErrorCountStart, 1 byte]
      timestamp [TimestampStart, 8 bytes]   msm_id [MsmIdStart, 8 bytes]

The state of a row is ``(started, seen, block, remaining, need_family, family)``: whether
MeasurementStart was read, a 7-bit mask of the blocks begun, the block being read (-1 between blocks),
the byte tokens it still needs, whether the next token must be an address-family token, and the family
fixed by the first address block (0 while unknown, else 4 or 6). A row is *done* when every block is
complete; the only token allowed then is the next measurement's MeasurementStart.

One value constraint rides along: a timestamp must lie in Python's datetime range (years 1-9999), the
range :func:`tokenizer.decode_measurement` can represent, so that *every* grammatical sample decodes.
Two more flags per row track it: whether the timestamp bytes read so far equal the lower (upper) bound's
leading bytes, in which case the next byte may not go below (above) the bound's next byte. Every other
field decodes whatever its bytes (any float64 is an RTT, any 16 bytes an IPv6 address).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tokenizer.vocab import (
    BLOCK_DST,
    BLOCK_ROLE,
    BLOCK_SRC,
    BLOCK_TIMESTAMP,
    BYTE_OFFSET,
    IPV4_START,
    IPV6_START,
    MEASUREMENT_START,
    NUM_BLOCKS,
    NUM_ROLES,
    VOCAB_SIZE,
    block_lengths,
)

ALL_BLOCKS = (1 << NUM_BLOCKS) - 1
# Byte tokens after the role token of each canonical block; address blocks get theirs from the family.
_PAYLOAD = np.array([0, 0, *(n - 1 for n in block_lengths(4)[2:])], dtype=np.int64)  # (7,)
_ROLE_TO_BLOCK = np.full(NUM_ROLES, -1, dtype=np.int64)
_ROLE_TO_BLOCK[BLOCK_ROLE] = np.arange(NUM_BLOCKS)
_BYTES = np.zeros(VOCAB_SIZE, dtype=bool)
_BYTES[BYTE_OFFSET : BYTE_OFFSET + 256] = True

# Timestamp bounds (epoch seconds of 0001-01-01 and 9999-12-31T23:59:59, UTC) as offset-binary bytes:
# flipping the sign bit makes the unsigned big-endian order of int64 bytes follow their signed order.
TIMESTAMP_MIN, TIMESTAMP_MAX = -62_135_596_800, 253_402_300_799
_TS_LO = np.frombuffer(((TIMESTAMP_MIN + (1 << 63)) % (1 << 64)).to_bytes(8, "big"), np.uint8).astype(np.int64)
_TS_HI = np.frombuffer(((TIMESTAMP_MAX + (1 << 63)) % (1 << 64)).to_bytes(8, "big"), np.uint8).astype(np.int64)
_SIGN_FLIP = np.array([0x80, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64)  # offset binary <-> two's complement
_TS_PAYLOAD = 8


class GrammarError(ValueError):
    """A token that the grammar does not allow at that point."""


class BatchState:
    """What a grammar's state (v1's :class:`State`, :class:`tokenizer.grammar_v2.State`) has in common: a
    frozen dataclass whose fields are (B,) arrays, one entry per row of the batch."""

    def __len__(self) -> int:
        return len(getattr(self, dataclasses.fields(self)[0].name))

    def take(self, index):
        """Rows ``index`` of the state (e.g. ``np.repeat(np.arange(B), S)`` to repeat each row S times)."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def read_prefix(state: BatchState, advance, prefix: Sequence[int]) -> BatchState:
    """The state of a batch of one after ``advance`` reads ``prefix`` from ``state``, one token at a time;
    :class:`GrammarError` where ``prefix`` breaks the grammar."""
    for token in prefix:
        state = advance(state, np.array([token]))
    return state


def ends_done(state_of, tokens: Sequence[int]) -> bool:
    """Whether the batch-of-one state ``state_of(tokens)`` is done (False where ``tokens`` break the grammar)."""
    try:
        state = state_of(tokens)
    except GrammarError:
        return False
    return bool(state.done[0])


@dataclasses.dataclass(frozen=True)
class State(BatchState):
    """Grammar state of a batch of rows; every field is a (B,) array."""

    started: np.ndarray  # bool: MeasurementStart read
    seen: np.ndarray  # int64 bit mask: bit i set once canonical block i has begun
    block: np.ndarray  # int64: canonical block being read, -1 between blocks
    remaining: np.ndarray  # int64: byte tokens still due in the current block
    need_family: np.ndarray  # bool: the next token must be Ipv4Start / Ipv6Start
    family: np.ndarray  # int64: 0 unknown, 4 or 6
    ts_low: np.ndarray  # bool: timestamp bytes so far equal TIMESTAMP_MIN's (the next may not go below)
    ts_high: np.ndarray  # bool: timestamp bytes so far equal TIMESTAMP_MAX's (the next may not go above)

    @property
    def done(self) -> np.ndarray:
        """(B,) bool: every block read completely."""
        return (self.seen == ALL_BLOCKS) & (self.remaining == 0) & ~self.need_family


def initial(batch: int) -> State:
    """The state before any token (a MeasurementStart must come first)."""
    return State(
        started=np.zeros(batch, bool),
        seen=np.zeros(batch, np.int64),
        block=np.full(batch, -1, np.int64),
        remaining=np.zeros(batch, np.int64),
        need_family=np.zeros(batch, bool),
        family=np.zeros(batch, np.int64),
        ts_low=np.zeros(batch, bool),
        ts_high=np.zeros(batch, bool),
    )


def _timestamp_bounds(state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows about to read a timestamp byte; per row the sign flip of that byte and its offset-binary bounds."""
    in_ts = (state.block == BLOCK_TIMESTAMP) & (state.remaining > 0)  # (B,)
    i = np.clip(_TS_PAYLOAD - state.remaining, 0, _TS_PAYLOAD - 1)  # (B,) index of the next byte
    lo = np.where(state.ts_low, _TS_LO[i], 0)  # (B,)
    hi = np.where(state.ts_high, _TS_HI[i], 255)  # (B,)
    return in_ts, _SIGN_FLIP[i], lo, hi


def allowed(state: State) -> np.ndarray:
    """(B, VOCAB_SIZE) bool mask of the tokens each row may take next."""
    b = len(state)
    mask = np.zeros((b, VOCAB_SIZE), dtype=bool)
    not_started = ~state.started
    mask[not_started, MEASUREMENT_START] = True
    # Address-family token: either while the family is unknown, else only the family already fixed.
    fam = state.started & state.need_family
    mask[fam & (state.family != 6), IPV4_START] = True
    mask[fam & (state.family != 4), IPV6_START] = True
    # Inside a block: byte tokens only.
    inside = state.started & ~state.need_family & (state.remaining > 0)
    mask[inside] |= _BYTES
    in_ts, flip, lo, hi = _timestamp_bounds(state)
    if in_ts.any():
        value = np.arange(VOCAB_SIZE) - BYTE_OFFSET  # (V,) byte value of each token (junk for non-bytes)
        offset = value[None, :] ^ flip[:, None]  # (B, V) offset-binary value of each byte token
        ok = (offset >= lo[:, None]) & (offset <= hi[:, None])  # (B, V)
        mask[in_ts] &= ok[in_ts]
    # Between blocks: the role token of any block not begun yet.
    between = state.started & ~state.need_family & (state.remaining == 0)
    unseen = ((state.seen[:, None] >> np.arange(NUM_BLOCKS)) & 1) == 0  # (B, 7)
    mask[:, BLOCK_ROLE] |= between[:, None] & unseen
    # A finished measurement may only be followed by the next one.
    mask[state.done, MEASUREMENT_START] = True
    return mask


def advance(state: State, tokens: np.ndarray, active: np.ndarray | None = None) -> State:
    """The state after each row reads ``tokens[b]`` ((B,) ids); rows where ``active`` is False keep their state.

    Raises :class:`GrammarError` when an active row's token is not allowed. After a finished row reads
    MeasurementStart it starts over (a new measurement).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    active = np.ones(len(state), bool) if active is None else np.asarray(active, bool)
    ok = allowed(state)[np.arange(len(state)), np.clip(tokens, 0, VOCAB_SIZE - 1)] & (tokens < VOCAB_SIZE)
    bad = active & ~ok
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise GrammarError(f"row {row}: token {int(tokens[row])} not allowed in state {describe(state, row)}")
    restart = active & state.done & (tokens == MEASUREMENT_START)
    started = state.started | (active & (tokens == MEASUREMENT_START))
    seen, block = state.seen.copy(), state.block.copy()
    remaining, need_family, family = state.remaining.copy(), state.need_family.copy(), state.family.copy()

    seen[restart], block[restart], remaining[restart] = 0, -1, 0
    need_family[restart], family[restart] = False, 0

    is_byte = active & _BYTES[np.clip(tokens, 0, VOCAB_SIZE - 1)]
    in_ts, flip, _, _ = _timestamp_bounds(state)
    at = is_byte & in_ts
    i = np.clip(_TS_PAYLOAD - state.remaining, 0, _TS_PAYLOAD - 1)
    offset = (tokens - BYTE_OFFSET) ^ flip
    ts_low = np.where(at, state.ts_low & (offset == _TS_LO[i]), state.ts_low)
    ts_high = np.where(at, state.ts_high & (offset == _TS_HI[i]), state.ts_high)
    remaining[is_byte] -= 1
    block[is_byte & (remaining == 0)] = -1

    is_fam = active & state.need_family
    fam_value = np.where(tokens == IPV4_START, 4, 6)
    family[is_fam] = fam_value[is_fam]
    remaining[is_fam] = np.where(fam_value[is_fam] == 4, 4, 16)
    need_family[is_fam] = False

    role_block = _ROLE_TO_BLOCK[np.clip(tokens, 0, NUM_ROLES - 1)]
    is_role = active & ~state.need_family & (tokens < NUM_ROLES) & (tokens != MEASUREMENT_START)
    is_role &= role_block >= 0
    seen[is_role] |= 1 << role_block[is_role]
    block[is_role] = role_block[is_role]
    is_addr = is_role & ((role_block == BLOCK_SRC) | (role_block == BLOCK_DST))
    need_family[is_addr] = True
    remaining[is_role & ~is_addr] = _PAYLOAD[role_block[is_role & ~is_addr]]
    enters_ts = is_role & (role_block == BLOCK_TIMESTAMP)
    ts_low[enters_ts], ts_high[enters_ts] = True, True
    return State(started, seen, block, remaining, need_family, family, ts_low, ts_high)


def tokens_left(state: State) -> np.ndarray:
    """(B,) the most tokens each row needs to finish its measurement (IPv6 lengths while the family is open)."""
    v4, v6 = np.array(block_lengths(4)), np.array(block_lengths(6))
    unseen = ((state.seen[:, None] >> np.arange(NUM_BLOCKS)) & 1) == 0  # (B, 7)
    lengths = np.where((state.family == 4)[:, None], v4[None, :], v6[None, :])  # (B, 7)
    family_bytes = np.where(state.family == 4, 4, 16)
    return (
        (~state.started).astype(np.int64)
        + (unseen * lengths).sum(axis=1)
        + state.remaining
        + state.need_family * (1 + family_bytes)
    )


def state_of(prefix: Sequence[int]) -> State:
    """The (batch of one) state after reading ``prefix``, the beginning of one measurement.

    Raises :class:`GrammarError` when ``prefix`` breaks the grammar.
    """
    return read_prefix(initial(1), advance, prefix)


def is_complete(tokens: Sequence[int]) -> bool:
    """Whether ``tokens`` is exactly one whole measurement under the grammar."""
    return ends_done(state_of, tokens)


def describe(state: State, row: int = 0) -> str:
    """A readable one-line form of one row's state (for error messages)."""
    blocks = [i for i in range(NUM_BLOCKS) if state.seen[row] >> i & 1]
    return (
        f"(started={bool(state.started[row])}, blocks begun={blocks}, block={int(state.block[row])}, "
        f"bytes due={int(state.remaining[row])}, family token due={bool(state.need_family[row])}, "
        f"family={int(state.family[row]) or 'unknown'})"
    )


def split_blocks(measurement: Sequence[int]) -> dict[int, np.ndarray]:
    """Cut one measurement's tokens into its field blocks: canonical block index -> tokens (role included).

    Block roles (1, 2, 5-9) mark where blocks begin; Ipv4Start/Ipv6Start sit inside address blocks.
    Raises :class:`GrammarError` unless ``measurement`` is one whole measurement.
    """
    tokens = np.asarray(measurement, dtype=np.int64)
    if not is_complete(tokens):
        raise GrammarError(f"not one whole measurement: {tokens.tolist()}")
    starts = np.flatnonzero(np.isin(tokens, BLOCK_ROLE))  # (7,)
    ends = np.append(starts[1:], len(tokens))  # (7,)
    return {int(_ROLE_TO_BLOCK[tokens[s]]): tokens[s:e] for s, e in zip(starts, ends)}
