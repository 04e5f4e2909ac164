"""The token grammar of scheme v2 records as a small state machine, vectorized over a batch.

Pure numpy; the same interface as v1's :mod:`tokenizer.grammar` (:class:`State`, :func:`initial`,
:func:`allowed`, :func:`advance`, :func:`tokens_left`, :func:`state_of`, :func:`is_complete`), reached as
``tokenizer.get_scheme("v2").grammar``. Constrained sampling draws only tokens :func:`allowed` permits, so
every sample is a well-formed v2 measurement; the grammar is exactly the structure
:func:`tokenizer.v2.parse_records` checks (a token it forbids cannot be completed into a record that parses).

Unlike v1, a v2 measurement is not self-contained: its source is its run's header and its time may be a
delta, so the grammar reads a record **from its beginning** (:func:`initial` is a record's start)::

    record       run run ...                (then PAD to the record's end: not part of the grammar)
    run          [Src4, 4 bytes | Src6, 16 bytes]  measurement  measurement ...
    measurement  time, then dst, size, errors and rtt once each, in any order (v2's field orders)
    time         [Time32, 4 bytes] | [Time64, 8 bytes]                   (a run's first: absolute only)
                 | [Delta_d] | [Delta16, 2 bytes]                         (later ones may be deltas)
    dst          [Dst4, 4 bytes] | [Dst6, 16 bytes]                       (the run's family)
    size         [Size_v] | [Size16, 2 bytes]        errors  [Err_v]
    rtt          [RttCoarse_c, RttFine_f] | [RttFail] | [RttExact, 8 bytes]

The state of a row is ``(phase, seen, remaining, fine, family)``: where the row stands between fields
(:data:`RECORD_START`, :data:`NEED_TIME`, :data:`BETWEEN`, :data:`IN_MEASUREMENT`), a
4-bit mask of the measurement's fields begun (dst, size, errors, rtt: ``Scheme.block_names``' order), the
payload bytes still due, whether an RTT fine token is due, and the run's address family. The phase is the
one the row is in once the current field's payload is read. A row is *done* when its last measurement is
complete (:data:`BETWEEN`): a new run or the next measurement's time may follow. PAD is not a token of the
grammar: a record's tokens before its PAD suffix are what it reads (the parser checks that PAD is a suffix),
so a draw under the masks is always a measurement.

As in v1 (any float64 is an RTT there), an ``RttExact`` payload is any 8 bytes, the value the parser reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tokenizer import vocab_v2 as vocab
from tokenizer.grammar import BatchState, GrammarError, ends_done, read_prefix

__all__ = ["GrammarError", "State", "initial", "allowed", "advance", "tokens_left", "state_of", "is_complete",
           "describe", "RECORD_START", "NEED_TIME", "BETWEEN", "IN_MEASUREMENT"]

RECORD_START, NEED_TIME, BETWEEN, IN_MEASUREMENT = range(4)
_PHASE_NAMES = ("record start", "absolute time due", "between measurements", "in a measurement")
FIELDS = 4  # dst, size, errors, rtt: bits 0..3 of ``seen``
ALL_FIELDS = (1 << FIELDS) - 1
_FIELD_OFKIND = {vocab.K_DST: 0, vocab.K_SIZE: 1, vocab.K_ERR: 2, vocab.K_RTT: 3}
_FIELD_BIT = np.zeros(len(vocab.KIND), np.int64)  # id -> the field bit it opens (0: none)
for _k, _bit in _FIELD_OFKIND.items():
    _FIELD_BIT[vocab.KIND == _k] = 1 << _bit
_FIELD_BIT = _FIELD_BIT[:vocab.VOCAB_SIZE]
KIND_V = vocab.KIND[:vocab.VOCAB_SIZE].astype(np.int64)
FOLLOW_V = vocab.FOLLOW[:vocab.VOCAB_SIZE].astype(np.int64)
_IS_COARSE = np.zeros(vocab.VOCAB_SIZE, bool)
_IS_COARSE[vocab.RTT_COARSE_BASE : vocab.RTT_COARSE_BASE + vocab.RTT_COARSE] = True

# --- the masks of allowed ids, one per row class (built once) ----------------------------------------


def _ids(*ranges) -> np.ndarray:
    mask = np.zeros(vocab.VOCAB_SIZE, bool)
    for r in ranges:
        mask[r] = True
    return mask


_BYTES = _ids(slice(0, vocab.NUM_BYTES))
_FINE = _ids(slice(vocab.RTT_FINE_BASE, vocab.RTT_FINE_BASE + vocab.RTT_FINE))
_SRC = _ids([vocab.SRC4, vocab.SRC6])
_ABS_TIME = _ids([vocab.TIME32, vocab.TIME64])
_ANY_TIME = _ABS_TIME | _ids([vocab.DELTA16], slice(vocab.DELTA_BASE, vocab.DELTA_BASE + vocab.DELTA_COUNT))
_FIELD_MASKS = {  # field bit -> ids that open it, per family (the destination must be the run's family)
    4: (_ids([vocab.DST4]), _ids([vocab.SIZE16], slice(vocab.SIZE_BASE, vocab.SIZE_BASE + vocab.SIZE_COUNT)),
        _ids(slice(vocab.ERR_BASE, vocab.ERR_BASE + vocab.ERR_COUNT)),
        _ids([vocab.RTT_FAIL, vocab.RTT_EXACT]) | _IS_COARSE),
}
_FIELD_MASKS[6] = (_ids([vocab.DST6]), *_FIELD_MASKS[4][1:])
# Classes: 0 payload byte due, 1 fine token due, 2 + phase for the phases other than IN_MEASUREMENT, then
# IN_MEASUREMENT by family (4, 6) and fields seen (16 each).
_C_BYTE, _C_FINE, _C_PHASE, _C_MEAS = 0, 1, 2, 2 + 4
_TABLE = np.zeros((_C_MEAS + 2 * (1 << FIELDS), vocab.VOCAB_SIZE), bool)
_TABLE[_C_BYTE] = _BYTES
_TABLE[_C_FINE] = _FINE
_TABLE[_C_PHASE + RECORD_START] = _SRC
_TABLE[_C_PHASE + NEED_TIME] = _ABS_TIME
_TABLE[_C_PHASE + BETWEEN] = _SRC | _ANY_TIME
for _f, _family in enumerate((4, 6)):
    for _seen in range(1 << FIELDS):
        row = _TABLE[_C_MEAS + _f * (1 << FIELDS) + _seen]
        for _bit in range(FIELDS):
            if not _seen >> _bit & 1:
                row |= _FIELD_MASKS[_family][_bit]
# A row that never fixed its family (it cannot be IN_MEASUREMENT then) reads the IPv6 class; harmless.


@dataclasses.dataclass(frozen=True)
class State(BatchState):
    """Grammar state of a batch of rows; every field is a (B,) array."""

    phase: np.ndarray  # int64: RECORD_START .. IN_MEASUREMENT, the phase once the current payload is read
    seen: np.ndarray  # int64 bit mask of the measurement's fields begun (dst, size, errors, rtt)
    remaining: np.ndarray  # int64: payload bytes still due
    fine: np.ndarray  # bool: an RTT fine token is due
    family: np.ndarray  # int64: the run's family, 4 or 6 (0 before any source)

    @property
    def done(self) -> np.ndarray:
        """(B,) bool: the last measurement read is complete (and nothing of a next one begun)."""
        return (self.phase == BETWEEN) & (self.remaining == 0) & ~self.fine


def initial(batch: int) -> State:
    """The state at a record's start (a source header must come first)."""
    return State(
        phase=np.full(batch, RECORD_START, np.int64),
        seen=np.zeros(batch, np.int64),
        remaining=np.zeros(batch, np.int64),
        fine=np.zeros(batch, bool),
        family=np.zeros(batch, np.int64),
    )


def _classes(state: State) -> np.ndarray:
    meas = _C_MEAS + np.where(state.family == 4, 0, 1 << FIELDS) + state.seen
    cls = np.where(state.phase == IN_MEASUREMENT, meas, _C_PHASE + state.phase)
    cls = np.where(state.fine, _C_FINE, cls)
    return np.where(state.remaining > 0, _C_BYTE, cls)


def allowed(state: State) -> np.ndarray:
    """(B, VOCAB_SIZE) bool mask of the tokens each row may take next."""
    return _TABLE[_classes(state)]


def advance(state: State, tokens: np.ndarray, active: np.ndarray | None = None) -> State:
    """The state after each row reads ``tokens[b]`` ((B,) ids); rows where ``active`` is False keep their state.

    Raises :class:`~tokenizer.grammar.GrammarError` when an active row's token is not allowed.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    b = len(state)
    active = np.ones(b, bool) if active is None else np.asarray(active, bool)
    in_vocab = (tokens >= 0) & (tokens < vocab.VOCAB_SIZE)
    t = np.where(in_vocab, tokens, 0)
    ok = in_vocab & _TABLE[_classes(state), t]
    bad = active & ~ok
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise GrammarError(f"row {row}: token {int(tokens[row])} not allowed in state {describe(state, row)}")
    phase, seen = state.phase.copy(), state.seen.copy()
    remaining, fine, family = state.remaining.copy(), state.fine.copy(), state.family.copy()
    payload = active & (state.remaining > 0)
    remaining[payload] -= 1
    fine[active & state.fine] = False
    opens = active & (state.remaining == 0) & ~state.fine  # the token opens a field (or is PAD)
    kind = KIND_V[t]
    follow = np.where(_IS_COARSE[t], 0, FOLLOW_V[t])  # the fine token is tracked by ``fine``, not bytes
    remaining[opens] = np.maximum(follow[opens], 0)
    fine[opens] = _IS_COARSE[t][opens]
    src = opens & (kind == vocab.K_SRC)
    family[src] = np.where(t[src] == vocab.SRC4, 4, 6)
    phase[src] = NEED_TIME
    time = opens & ((kind == vocab.K_TIME_ABS) | (kind == vocab.K_DELTA))
    phase[time] = IN_MEASUREMENT
    seen[time] = 0
    field = opens & (_FIELD_BIT[t] > 0)
    seen[field] |= _FIELD_BIT[t][field]
    phase[field] = np.where(seen[field] == ALL_FIELDS, BETWEEN, IN_MEASUREMENT)
    return State(phase, seen, remaining, fine, family)


_FIELD_MAX = {4: (vocab.DST_LEN[4], 3, 1, 9), 6: (vocab.DST_LEN[6], 3, 1, 9)}  # most tokens of each field, by family


def tokens_left(state: State) -> np.ndarray:
    """(B,) the most tokens each row needs to finish its measurement (IPv6 lengths while the family is open);
    0 for a row that is done."""
    v4, v6 = np.array(_FIELD_MAX[4]), np.array(_FIELD_MAX[6])
    lengths = np.where((state.family == 4)[:, None], v4[None, :], v6[None, :])  # (B, 4)
    unseen = ((state.seen[:, None] >> np.arange(FIELDS)) & 1) == 0  # (B, 4)
    fields_due = np.where(state.phase == IN_MEASUREMENT, (unseen * lengths).sum(axis=1), 0)
    fields_due = np.where(np.isin(state.phase, (RECORD_START, NEED_TIME)), v6.sum(), fields_due)
    fields_due = np.where((state.phase == NEED_TIME) & (state.family == 4), v4.sum(), fields_due)
    time_due = np.where(np.isin(state.phase, (RECORD_START, NEED_TIME)), 9, 0)
    src_due = np.where(state.phase == RECORD_START, vocab.SRC_LEN[6], 0)
    return src_due + time_due + fields_due + state.remaining + state.fine


def state_of(prefix: Sequence[int]) -> State:
    """The (batch of one) state after reading ``prefix``, the beginning of a record.

    Raises :class:`~tokenizer.grammar.GrammarError` when ``prefix`` breaks the grammar.
    """
    return read_prefix(initial(1), advance, prefix)


def is_complete(tokens: Sequence[int]) -> bool:
    """Whether ``tokens`` is the beginning of a record that ends with a whole measurement."""
    return ends_done(state_of, tokens)


def describe(state: State, row: int = 0) -> str:
    """A readable one-line form of one row's state (for error messages)."""
    fields = [name for i, name in enumerate(("dst", "size", "errors", "rtt")) if state.seen[row] >> i & 1]
    return (
        f"({_PHASE_NAMES[int(state.phase[row])]}, fields begun={fields}, bytes due={int(state.remaining[row])}, "
        f"fine token due={bool(state.fine[row])}, family={int(state.family[row]) or 'unknown'})"
    )
