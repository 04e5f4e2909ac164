"""Scheme v2's vectorized encoder (layout in :mod:`tokenizer.v2`): the rows' bodies, then the records.

A measurement's tokens depend on its neighbours (run start or not, the previous time), so encoding has two
steps: :func:`encode_table` writes each row's *body* (dst, size, errors, rtt: independent of other rows)
and :func:`assemble` lays items in (source, time) order into records, choosing each item's head (source
and absolute time where a run starts, else the delta). Both are tested against the per-row reference,
:mod:`tokenizer.v2_reference`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokenizer import vocab_v2 as vocab
from tokenizer.errors import REASONS
from tokenizer.table import EncodedTable, _check


def encode_table(table) -> EncodedTable:
    """Every row's *body* tokens (dst, size, errors, rtt), vectorized; the same accepted and rejected rows,
    with the same reasons, as v1's encoder. ``tokens[offsets[i]:offsets[i+1]]`` is the body of input row
    ``accepted[i]``; the heads are added by :func:`assemble` once the rows are in (source, time) order."""
    code, cols = _check(table)
    accepted = np.flatnonzero(code == 0)
    rejected = np.flatnonzero(code != 0)
    reasons = np.array(REASONS, dtype=object)[code[rejected].astype(np.int64) - 1]
    ver = cols["ver"][accepted].astype(np.int8)
    dst_idx = cols["dst_idx"][accepted]
    size = cols["size"][accepted]
    errors = cols["errors"][accepted]
    rtt = cols["rtt"][accepted]
    level = vocab.rtt_levels(rtt)
    fail = rtt == -1.0
    exact = (level < 0) & ~fail
    dst_len = np.where(ver == 4, 5, 17)
    size_len = np.where(size < vocab.SIZE_COUNT, 1, 3)
    rtt_len = np.where(fail, 1, np.where(exact, 9, 2))
    lengths = dst_len + size_len + 1 + rtt_len
    offsets = np.zeros(len(accepted) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.uint16)
    start = offsets[:-1]
    packed = cols["packed"][dst_idx]  # (n, 16) uint8
    v4 = ver == 4
    out[start] = np.where(v4, vocab.DST4, vocab.DST6)
    _scatter(out, start[v4] + 1, packed[v4, :4])
    _scatter(out, start[~v4] + 1, packed[~v4, :16])
    at = start + dst_len
    small = size < vocab.SIZE_COUNT
    out[at[small]] = vocab.SIZE_BASE + size[small]
    out[at[~small]] = vocab.SIZE16
    _scatter(out, at[~small] + 1, size[~small].astype(">u2").view(np.uint8).reshape(-1, 2))
    at = at + size_len
    out[at] = vocab.ERR_BASE + errors
    at = at + 1
    ok = level >= 0
    out[at[ok]], out[at[ok] + 1] = vocab.rtt_scale_tokens(level[ok])
    out[at[fail]] = vocab.RTT_FAIL
    out[at[exact]] = vocab.RTT_EXACT
    _scatter(out, at[exact] + 1, rtt[exact].astype(">f8").view(np.uint8).reshape(-1, 8))
    return EncodedTable(
        tokens=out,
        offsets=offsets,
        accepted=accepted.astype(np.int64),
        timestamp=cols["ts"][accepted],
        ip_version=ver,
        src_words=cols["words"][cols["src_idx"][accepted]],
        rejected=rejected.astype(np.int64),
        reasons=reasons,
    )


def _scatter(out: np.ndarray, starts: np.ndarray, raw: np.ndarray) -> None:
    """out[starts[i] + j] = raw[i, j] (bytes are their own ids)."""
    if len(starts):
        out[starts[:, None] + np.arange(raw.shape[1])] = raw


# --- assembling records ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Items:
    """Encoded rows in (source, time) order, ready to lay into records."""

    body: np.ndarray  # uint16, the bodies concatenated
    offsets: np.ndarray  # int64 (n + 1,)
    source: np.ndarray  # int64 (n,) source id, grouped ascending
    family: np.ndarray  # int8 (n,)
    src_words: np.ndarray  # uint64 (n, 2) source address (high, low)
    timestamp: np.ndarray  # int64 (n,), ascending within a source


def _abs_len(ts: np.ndarray) -> np.ndarray:
    return np.where((ts >= 0) & (ts < 1 << 32), 5, 9)


def head_lengths(items: Items) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item: (new source, tokens of the head as a run start, tokens of the head as a continuation)."""
    n = len(items.source)
    new = np.ones(n, bool)
    new[1:] = items.source[1:] != items.source[:-1]
    delta = np.zeros(n, np.int64)
    delta[1:] = items.timestamp[1:] - items.timestamp[:-1]
    abs_len = _abs_len(items.timestamp)
    start = np.where(items.family == 4, vocab.SRC_LEN[4], vocab.SRC_LEN[6]) + abs_len
    cont = np.where(delta < vocab.DELTA_COUNT, 1, np.where(delta < 1 << 16, 3, abs_len))
    cont = np.where(new, start, cont)
    return new, start, cont


def assemble(items: Items, seq_len: int, record_first: np.ndarray) -> np.ndarray:
    """Lay ``items`` into records: ``record_first`` (r + 1,) are the item index bounds of each record (from
    ``beam_pipelines.pretokenize.packing.plan_runs``). An item opens a run where its source changes or its
    record starts. Returns (r, seq_len) uint16 records, PAD after the last item of each."""
    n = len(items.source)
    r = len(record_first) - 1
    new, start_len, cont_len = head_lengths(items)
    run_start = new.copy()
    run_start[record_first[:-1][record_first[:-1] < n]] = True
    body_len = np.diff(items.offsets)
    head_len = np.where(run_start, start_len, cont_len)
    # The heads, concatenated. Most are one token (a short time delta), so each kind of head is written
    # by its own scatter over the items that have it, not as a (n, widest head) matrix.
    head_at = np.zeros(n + 1, np.int64)
    np.cumsum(head_len, out=head_at[1:])
    heads = np.empty(int(head_at[-1]), np.uint16)
    rows = np.flatnonzero(run_start)
    fam4 = items.family[rows] == 4
    heads[head_at[rows]] = np.where(fam4, vocab.SRC4, vocab.SRC6)
    src_bytes = np.ascontiguousarray(items.src_words[rows].astype(">u8")).view(np.uint8).reshape(-1, 16)
    _scatter(heads, head_at[rows[fam4]] + 1, src_bytes[fam4, 12:16])
    _scatter(heads, head_at[rows[~fam4]] + 1, src_bytes[~fam4])
    ts = items.timestamp
    src_len = np.where(items.family == 4, vocab.SRC_LEN[4], vocab.SRC_LEN[6])
    at = head_at[:-1] + np.where(run_start, src_len, 0)  # the time
    delta = np.zeros(n, np.int64)
    delta[1:] = ts[1:] - ts[:-1]
    absolute = run_start | (delta >= 1 << 16)
    short = ~absolute & (delta < vocab.DELTA_COUNT)
    mid = ~absolute & ~short
    heads[at[short]] = vocab.DELTA_BASE + delta[short]
    heads[at[mid]] = vocab.DELTA16
    _scatter(heads, at[mid] + 1, delta[mid].astype(">u2").view(np.uint8).reshape(-1, 2))
    t32 = absolute & (ts >= 0) & (ts < 1 << 32)
    t64 = absolute & ~t32
    heads[at[t32]] = vocab.TIME32
    _scatter(heads, at[t32] + 1, ts[t32].astype(">u4").view(np.uint8).reshape(-1, 4))
    heads[at[t64]] = vocab.TIME64
    _scatter(heads, at[t64] + 1, ts[t64].astype(">i8").view(np.uint8).reshape(-1, 8))
    # Items as one stream, each its head then its body: a mask of body positions from the lengths.
    is_body = np.repeat(np.tile(np.array([False, True]), n), np.stack([head_len, body_len], axis=1).ravel())
    stream = np.empty(len(is_body), np.uint16)
    stream[~is_body] = heads
    stream[is_body] = items.body
    # Records: record k's items fill row k from the left, PAD after.
    item_at = np.zeros(n + 1, np.int64)
    np.cumsum(head_len + body_len, out=item_at[1:])
    record_len = item_at[record_first[1:]] - item_at[record_first[:-1]]
    if np.any(record_len > seq_len):
        raise ValueError("a record's items do not fit seq_len")
    out = np.full((r, seq_len), vocab.PAD, np.uint16)
    out[np.arange(seq_len)[None, :] < record_len[:, None]] = stream
    return out
