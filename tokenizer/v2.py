"""Scheme ``v2``: a compact layout of runs of one source's measurements (docs/tokenizer.md, "Scheme v2").

A record is a sequence of *runs*, each one source's measurements in time order, then PAD::

    run          [Src4, 4 bytes | Src6, 16 bytes]  measurement  measurement ...
    measurement  time  dst  size  errors  rtt          (stored in this order: addresses first, RTT last)

    time    the run's first measurement: [Time32, 4 bytes] (uint32 epoch s) or [Time64, 8 bytes] (int64);
            after it, the delta to the run's previous measurement where that is shorter:
            [Delta_d] (one token, d < 256 s) or [Delta16, 2 bytes] (d < 65536 s), else absolute again
    dst     [Dst4, 4 bytes] or [Dst6, 16 bytes]
    size    [Size_v] (one token, v < 256) or [Size16, 2 bytes]
    errors  [Err_v] (one token, 0..255)
    rtt     [RttCoarse_c, RttFine_f]: level 64c + f of a log scale, 0.01 ms * 1.002**level, decoded at the
            level's geometric centre: relative error <= 0.1% from 0.01 ms to 7.7e6 ms; the coarse token
            alone places the RTT within 6.6%. [RttFail] for a failed ping (-1.0); [RttExact, 8 bytes
            float64] (bit-exact) for any other value outside the scale (0, negative, tiny, huge).

Byte ``b`` is id ``b`` (0..255); every other id opens a field, so a stream cuts into runs, measurements and
fields without side information. ``msm_id`` is not written (it is validated as in v1, so both schemes reject
the same rows): on the real file it carries 0.06 bits per measurement once the source and destination are
known, and would cost 5 tokens (docs/tokenizer.md).

A measurement's tokens depend on its neighbours (run start or not, the previous time), so encoding has two
steps: :func:`encode_table` writes each row's *body* (dst, size, errors, rtt: independent of other rows)
and :func:`assemble` lays items in (source, time) order into records, choosing each item's head (source
and absolute time where a run starts, else the delta). :func:`reference_measurement` is the per-row
reference both are tested against.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np

from tokenizer import grammar_v2
from tokenizer.addresses import address_words
from tokenizer.errors import DecodeError
from tokenizer.measurement import encode_measurement, epoch_seconds
from tokenizer.schemes import FieldSpec, Parsed, RttCodec, Scheme, Survey
from tokenizer.table import EncodedTable, _check
from tokenizer.vocab_v2 import (
    DELTA16,
    DELTA_BASE,
    DELTA_COUNT,
    DST4,
    DST6,
    DST_LEN,
    ERR_BASE,
    ERR_COUNT,
    FOLLOW,
    K_BYTE,
    K_DELTA,
    K_DST,
    K_ERR,
    K_FINE,
    K_PAD,
    K_RTT,
    K_SIZE,
    K_SRC,
    K_TIME_ABS,
    KIND,
    NUM_BYTES,
    PAD,
    RTT_CENTRES,
    RTT_COARSE,
    RTT_COARSE_BASE,
    RTT_EDGES,
    RTT_EXACT,
    RTT_FAIL,
    RTT_FINE,
    RTT_FINE_BASE,
    RTT_HI,
    RTT_LO,
    RTT_RATIO,
    SIZE16,
    SIZE_BASE,
    SIZE_COUNT,
    SRC4,
    SRC6,
    SRC_LEN,
    TIME32,
    TIME64,
    VOCAB_SIZE,
)

_EDGE_LIST = RTT_EDGES.tolist()  # bisect on a list: faster than numpy for one value


def rtt_level(rtt: float) -> int | None:
    """The scale level of a positive RTT in [RTT_LO, RTT_HI), else None (failure or escape)."""
    if not RTT_LO <= rtt < RTT_HI:
        return None
    return bisect.bisect_right(_EDGE_LIST, rtt) - 1


def rtt_levels(rtt: np.ndarray) -> np.ndarray:
    """Vectorized :func:`rtt_level`: -1 where the value is off the scale."""
    level = np.searchsorted(RTT_EDGES, rtt, side="right") - 1
    return np.where((rtt >= RTT_LO) & (rtt < RTT_HI), level, -1)


# --- the per-row reference -------------------------------------------------------------------------


def _be(value: int, width: int, signed: bool = False) -> list[int]:
    return list(int(value).to_bytes(width, "big", signed=signed))


def _address(text: str) -> tuple[int, bytes]:
    import ipaddress

    ip = ipaddress.ip_address(text)
    return ip.version, ip.packed


def reference_body(row: Mapping) -> list[int]:
    """The body (dst, size, errors, rtt) of one valid row, one token at a time (the reference)."""
    version, dst = _address(row["dst_addr"])
    out = [DST4 if version == 4 else DST6, *dst]
    size = int(row["size"])
    out += [SIZE_BASE + size] if size < SIZE_COUNT else [SIZE16, *_be(size, 2)]
    out.append(ERR_BASE + int(row["packet_error_count"]))
    rtt = float(row["rtt"])
    level = rtt_level(rtt)
    if rtt == -1.0:
        out.append(RTT_FAIL)
    elif level is None:
        out += [RTT_EXACT, *struct.pack(">d", rtt)]
    else:
        out += [RTT_COARSE_BASE + level // RTT_FINE, RTT_FINE_BASE + level % RTT_FINE]
    return out


def _absolute(ts: int) -> list[int]:
    return [TIME32, *_be(ts, 4)] if 0 <= ts < 1 << 32 else [TIME64, *_be(ts, 8, signed=True)]


def reference_measurement(row: Mapping, previous: Mapping | None = None) -> list[int]:
    """One row's tokens: with the run's source header when ``previous`` is None (a run starts), else with
    the time as a delta to ``previous`` (the run's previous row, not later in time) where that is shorter.

    Validates the row as v1 does (:class:`~tokenizer.errors.InvalidMeasurement` with the same reason).
    """
    encode_measurement(row)  # the same checks, the same reasons, in the same order
    ts = epoch_seconds(row["event_time"])
    if previous is None:
        version, src = _address(row["src_addr"])
        head = [SRC4 if version == 4 else SRC6, *src, *_absolute(ts)]
    else:
        head = _delta_head(ts, epoch_seconds(previous["event_time"]))
    return head + reference_body(row)


def _delta_head(ts: int, previous: int) -> list[int]:
    """The time of a run's later measurement: the delta to ``previous`` where shorter, else absolute."""
    delta = ts - previous
    if delta < 0:
        raise ValueError("a run's rows must be in time order")
    if delta < DELTA_COUNT:
        return [DELTA_BASE + delta]
    if delta < 1 << 16:
        return [DELTA16, *_be(delta, 2)]
    return _absolute(ts)


# --- the vectorized table encoder (bodies) ---------------------------------------------------------


def encode_table(table) -> EncodedTable:
    """Every row's *body* tokens (dst, size, errors, rtt), vectorized; the same accepted and rejected rows,
    with the same reasons, as v1's encoder. ``tokens[offsets[i]:offsets[i+1]]`` is the body of input row
    ``accepted[i]``; the heads are added by :func:`assemble` once the rows are in (source, time) order."""
    code, cols = _check(table)
    accepted = np.flatnonzero(code == 0)
    rejected = np.flatnonzero(code != 0)
    from tokenizer.errors import REASONS

    reasons = np.array(REASONS, dtype=object)[code[rejected].astype(np.int64) - 1]
    ver = cols["ver"][accepted].astype(np.int8)
    dst_idx = cols["dst_idx"][accepted]
    size = cols["size"][accepted]
    errors = cols["errors"][accepted]
    rtt = cols["rtt"][accepted]
    level = rtt_levels(rtt)
    fail = rtt == -1.0
    exact = (level < 0) & ~fail
    dst_len = np.where(ver == 4, 5, 17)
    size_len = np.where(size < SIZE_COUNT, 1, 3)
    rtt_len = np.where(fail, 1, np.where(exact, 9, 2))
    lengths = dst_len + size_len + 1 + rtt_len
    offsets = np.zeros(len(accepted) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.uint16)
    start = offsets[:-1]
    packed = cols["packed"][dst_idx]  # (n, 16) uint8
    v4 = ver == 4
    out[start] = np.where(v4, DST4, DST6)
    _scatter(out, start[v4] + 1, packed[v4, :4])
    _scatter(out, start[~v4] + 1, packed[~v4, :16])
    at = start + dst_len
    small = size < SIZE_COUNT
    out[at[small]] = SIZE_BASE + size[small]
    out[at[~small]] = SIZE16
    _scatter(out, at[~small] + 1, size[~small].astype(">u2").view(np.uint8).reshape(-1, 2))
    at = at + size_len
    out[at] = ERR_BASE + errors
    at = at + 1
    ok = level >= 0
    out[at[ok]] = RTT_COARSE_BASE + level[ok] // RTT_FINE
    out[at[ok] + 1] = RTT_FINE_BASE + level[ok] % RTT_FINE
    out[at[fail]] = RTT_FAIL
    out[at[exact]] = RTT_EXACT
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
    start = np.where(items.family == 4, SRC_LEN[4], SRC_LEN[6]) + abs_len
    cont = np.where(delta < DELTA_COUNT, 1, np.where(delta < 1 << 16, 3, abs_len))
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
    heads[head_at[rows]] = np.where(fam4, SRC4, SRC6)
    src_bytes = np.ascontiguousarray(items.src_words[rows].astype(">u8")).view(np.uint8).reshape(-1, 16)
    _scatter(heads, head_at[rows[fam4]] + 1, src_bytes[fam4, 12:16])
    _scatter(heads, head_at[rows[~fam4]] + 1, src_bytes[~fam4])
    ts = items.timestamp
    at = head_at[:-1] + np.where(run_start, np.where(items.family == 4, SRC_LEN[4], SRC_LEN[6]), 0)  # the time
    delta = np.zeros(n, np.int64)
    delta[1:] = ts[1:] - ts[:-1]
    absolute = run_start | (delta >= 1 << 16)
    short = ~absolute & (delta < DELTA_COUNT)
    mid = ~absolute & ~short
    heads[at[short]] = DELTA_BASE + delta[short]
    heads[at[mid]] = DELTA16
    _scatter(heads, at[mid] + 1, delta[mid].astype(">u2").view(np.uint8).reshape(-1, 2))
    t32 = absolute & (ts >= 0) & (ts < 1 << 32)
    t64 = absolute & ~t32
    heads[at[t32]] = TIME32
    _scatter(heads, at[t32] + 1, ts[t32].astype(">u4").view(np.uint8).reshape(-1, 4))
    heads[at[t64]] = TIME64
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
    out = np.full((r, seq_len), PAD, np.uint16)
    out[np.arange(seq_len)[None, :] < record_len[:, None]] = stream
    return out


# --- the record parser -----------------------------------------------------------------------------



def _bytes_at(padded: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(padded, width)[pos].astype(np.uint8)  # (n, width)


def _big_endian(raw: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(raw).view(dtype)[:, 0].astype(np.dtype(dtype).newbyteorder("="))


def parse_records(records: np.ndarray, *, first_record: int = 0) -> Parsed:
    """The measurements of a block of v2 records ((records, seq_len) uint16), in reading order.

    Checks the whole grammar of every record (each id where it may stand, every payload, runs opened by a
    source with an absolute time, PAD a suffix) and raises :class:`~tokenizer.errors.DecodeError` naming
    the first bad record.
    """
    records = np.asarray(records)
    n_rec, seq_len = records.shape
    flat = records.reshape(-1).astype(np.int64)
    kind = KIND[flat]
    where = f"records {first_record}..{first_record + n_rec - 1}"

    def fail(mask_or_pos, what):
        bad = int(np.flatnonzero(mask_or_pos)[0]) if np.asarray(mask_or_pos).dtype == bool else int(mask_or_pos)
        raise DecodeError(f"record {first_record + bad // seq_len}, position {bad % seq_len}: {what}")

    if np.any(kind < 0):
        fail(kind < 0, f"token {int(flat[kind < 0][0])} is outside the v2 vocabulary")
    is_pad = kind == K_PAD
    rows_pad = is_pad.reshape(n_rec, seq_len)
    body_len = np.where(rows_pad.any(axis=1), rows_pad.argmax(axis=1), seq_len)
    if np.any(rows_pad.sum(axis=1) != seq_len - body_len):
        fail(np.repeat(rows_pad.sum(axis=1) != seq_len - body_len, seq_len), "PAD is only allowed as a suffix")
    # Every opening id is followed by exactly its payload: walk the openers and check what they cover.
    opener = (kind != K_BYTE) & (kind != K_FINE) & ~is_pad
    op_pos = np.flatnonzero(opener)
    follow = FOLLOW[flat[op_pos]].astype(np.int64)
    covered = np.zeros(len(flat) + 1, np.int64)
    np.add.at(covered, op_pos + 1, 1)
    np.add.at(covered, np.minimum(op_pos + 1 + follow, len(flat)), -1)
    inside = np.cumsum(covered[:-1]) > 0  # position lies in some opener's payload
    expect_payload = (kind == K_BYTE) | (kind == K_FINE)
    if np.any(inside != expect_payload):
        fail(inside != expect_payload, "a field's payload is cut short or a byte stands outside any field")
    end_of = op_pos + 1 + follow
    if len(op_pos) and np.any((end_of - 1) // seq_len != op_pos // seq_len):
        fail(op_pos[(end_of - 1) // seq_len != op_pos // seq_len][0], "a field runs past its record")
    fine_pos = np.flatnonzero(kind == K_FINE)
    coarse = (flat >= RTT_COARSE_BASE) & (flat < RTT_COARSE_BASE + RTT_COARSE)
    if len(fine_pos) != int(coarse.sum()) or np.any(~coarse[fine_pos - 1]):
        # a fine token without its coarse one, or a coarse token with no fine one after it (at a record's end)
        lone = ((kind == K_FINE) & ~np.roll(coarse, 1)) | (coarse & ~np.append(kind[1:] == K_FINE, False))
        fail(lone, "an RTT fine token must follow a coarse one")
    if np.any((kind == K_BYTE) & (np.roll(kind, 1) == K_RTT) & (np.roll(flat, 1) != RTT_EXACT)):
        fail((kind == K_BYTE) & (np.roll(kind, 1) == K_RTT), "bytes after a coarse RTT token")

    # Measurements: each opens with a time (absolute or delta), then dst, size, errors and rtt once each.
    src_pos = np.flatnonzero(kind == K_SRC)
    time_pos = np.flatnonzero((kind == K_TIME_ABS) | (kind == K_DELTA))
    n = len(time_pos)
    following = np.append(time_pos[1:], len(flat))
    field_pos = {}
    for k, name in ((K_DST, "destination"), (K_SIZE, "size"), (K_ERR, "error count"), (K_RTT, "RTT")):
        p = np.flatnonzero(kind == k)
        if len(p) != n or (n and not (np.all(p > time_pos) and np.all(p < following))):
            raise DecodeError(f"{where}: {n} measurements but {len(p)} {name} fields, or one outside its measurement")
        field_pos[k] = p
    # A source header sits between measurements (never inside one) and opens a run; each record's first
    # token is a source header, and a run's first measurement has an absolute time.
    run_of = np.searchsorted(src_pos, time_pos, side="right") - 1  # (n,)
    if n and np.any(run_of < 0):
        fail(time_pos[0], "a measurement before any source")
    last_field = np.maximum.reduce([field_pos[k] for k in field_pos]) if n else np.zeros(0, np.int64)
    if len(src_pos):
        nxt = np.searchsorted(time_pos, src_pos)  # the run's first measurement
        if np.any(nxt >= n) or np.any(time_pos[np.minimum(nxt, n - 1)] != src_pos + 1 + FOLLOW[flat[src_pos]]):
            fail(src_pos[0], "a source header must be followed directly by a measurement")
        if np.any(kind[time_pos[nxt]] != K_TIME_ABS):
            fail(time_pos[nxt][kind[time_pos[nxt]] != K_TIME_ABS][0], "a run must start with an absolute time")
        inside_meas = nxt > 0
        if np.any(src_pos[inside_meas] < last_field[nxt[inside_meas] - 1]):
            fail(src_pos[inside_meas][0], "a source header inside a measurement")
    record_starts = np.arange(n_rec) * seq_len
    nonempty = body_len > 0
    if np.any(kind[record_starts[nonempty]] != K_SRC):
        fail(record_starts[nonempty][kind[record_starts[nonempty]] != K_SRC][0], "a record must start with a source")

    tail = max(16, 8) + 1
    padded = np.concatenate([flat, np.zeros(tail, np.int64)])
    # source and family from each measurement's run header
    run_src = src_pos[run_of] if n else np.zeros(0, np.int64)
    src_v4 = flat[run_src] == SRC4
    src, family = _keys(padded, run_src, src_v4)
    dpos = field_pos[K_DST]
    dst_v4 = flat[dpos] == DST4
    if np.any(dst_v4 != src_v4):
        fail(dpos[dst_v4 != src_v4][0], "destination and source of different families")
    dst, _ = _keys(padded, dpos, dst_v4)
    # time
    tid = flat[time_pos]
    value = np.zeros(n, np.int64)
    is32, is64, is16 = tid == TIME32, tid == TIME64, tid == DELTA16
    small = (tid >= DELTA_BASE) & (tid < DELTA_BASE + DELTA_COUNT)
    value[is32] = _big_endian(_bytes_at(padded, time_pos[is32] + 1, 4), ">u4")
    value[is64] = _big_endian(_bytes_at(padded, time_pos[is64] + 1, 8), ">i8")
    value[is16] = _big_endian(_bytes_at(padded, time_pos[is16] + 1, 2), ">u2")
    value[small] = tid[small] - DELTA_BASE
    absolute = is32 | is64
    delta = np.where(absolute, 0, value)
    cd = np.cumsum(delta)
    seg = np.maximum.accumulate(np.where(absolute, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    timestamp = value[seg] + cd - cd[seg]
    # size, errors
    spos = field_pos[K_SIZE]
    sid = flat[spos]
    size = np.where(sid == SIZE16, 0, sid - SIZE_BASE)
    big = sid == SIZE16
    size[big] = _big_endian(_bytes_at(padded, spos[big] + 1, 2), ">u2")
    errors = flat[field_pos[K_ERR]] - ERR_BASE
    # rtt
    rpos = field_pos[K_RTT]
    rid = flat[rpos]
    rtt = np.full(n, -1.0)
    ok = (rid >= RTT_COARSE_BASE) & (rid < RTT_COARSE_BASE + RTT_COARSE)
    level = (rid[ok] - RTT_COARSE_BASE) * RTT_FINE + (flat[rpos[ok] + 1] - RTT_FINE_BASE)
    rtt[ok] = RTT_CENTRES[level]
    ex = rid == RTT_EXACT
    rtt[ex] = _big_endian(_bytes_at(padded, rpos[ex] + 1, 8), ">f8")
    # spans: a run's first measurement starts at its source header
    first_of_run = np.zeros(n, bool)
    if len(src_pos):
        first_of_run[np.searchsorted(time_pos, src_pos)] = True
    starts = np.where(first_of_run, run_src, time_pos)
    rec = starts // seq_len
    nxt_start = np.append(starts[1:], n_rec * seq_len)
    content_end = rec * seq_len + body_len[rec]
    end = np.where(nxt_start // seq_len == rec, nxt_start, content_end)
    return Parsed(
        record=rec.astype(np.int64) + first_record,
        start=(starts % seq_len).astype(np.int32),
        end=(end - rec * seq_len).astype(np.int32),
        family=family,
        src=src,
        dst=dst,
        rtt=rtt,
        timestamp=timestamp.astype(np.int64),
        size=size.astype(np.int64),
        errors=errors.astype(np.int64),
        msm_id=None,
        rtt_pos=rpos.astype(np.int64),
        dst_pos=dpos.astype(np.int64),
        blocks=np.stack([dpos, spos, field_pos[K_ERR], rpos], axis=1).astype(np.int64),  # (n, 4) canonical
    )


_V4_MAPPED = np.uint64(0xFFFF << 32)


def _keys(padded: np.ndarray, pos: np.ndarray, v4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    raw = _bytes_at(padded, pos + 1, 16)  # (n, 16); a v4 address uses the first 4
    keys = np.ascontiguousarray(raw).view(">u8").astype(np.uint64)  # (n, 2)
    v4_value = np.ascontiguousarray(raw[:, :4]).view(">u4")[:, 0].astype(np.uint64)
    keys[v4, 0] = 0
    keys[v4, 1] = _V4_MAPPED | v4_value[v4]
    return keys, np.where(v4, 4, 6).astype(np.int8)


def survey(records: np.ndarray) -> Survey:
    """Counts by field ids alone: every time id begins a measurement, every source id a run (headers cut
    short by the end are left out); a measurement's family is its run's; a non-empty record must begin
    with a source header."""
    records = np.asarray(records)
    flat = records.reshape(-1).astype(np.int64)
    kind = KIND[np.minimum(flat, len(KIND) - 1)]
    src_pos = np.flatnonzero(kind == K_SRC)
    src_pos = src_pos[src_pos + 1 + FOLLOW[flat[src_pos]] <= len(flat)]
    v4 = flat[src_pos] == SRC4
    padded = np.concatenate([flat, np.zeros(17, np.int64)])
    keys, family = _keys(padded, src_pos, v4) if len(src_pos) else (np.zeros((0, 2), np.uint64), np.zeros(0, np.int8))
    time = (kind == K_TIME_ABS) | (kind == K_DELTA)
    time_pos = np.flatnonzero(time)
    run = np.searchsorted(src_pos, time_pos, side="right") - 1
    known = run >= 0
    n4 = int(np.count_nonzero(v4[run[known]])) if len(src_pos) else 0
    return Survey(
        measurements=time.reshape(records.shape).sum(axis=1).astype(np.int64),
        starts_ok=(records[:, 0] == PAD) | np.isin(records[:, 0], (SRC4, SRC6)),
        source_family=family,
        source_key=keys,
        ipv4_measurements=n4,
        ipv6_measurements=int(np.count_nonzero(known)) - n4,
    )


# --- the scheme object -----------------------------------------------------------------------------


class _V2Rtt(RttCodec):
    """v2's RTT: two value tokens, ``RttCoarse_c`` then ``RttFine_f`` (level 64c + f of the log scale),
    with no role token before them (the coarse token opens the field). Coarse and fine ids each ascend
    with the value, so :meth:`value_tokens` is the id range in order. ``RttFail`` (one token) is the
    failure; ``RttExact`` (+ 8 bytes) an exact value off the scale, which the descent leaves out."""

    role = None
    width = 2
    failure_tokens = np.array([RTT_FAIL], np.int64)
    rel_error = math.sqrt(RTT_RATIO) - 1
    lo_ms = RTT_LO
    hi_ms = RTT_HI

    def grammar_tokens(self, position: int) -> np.ndarray:
        self._check(position)
        if position == 0:
            return np.concatenate([[RTT_FAIL, RTT_EXACT], np.arange(RTT_COARSE_BASE, RTT_COARSE_BASE + RTT_COARSE)])
        return np.arange(RTT_FINE_BASE, RTT_FINE_BASE + RTT_FINE, dtype=np.int64)

    def value_tokens(self, position: int) -> np.ndarray:
        self._check(position)
        if position == 0:
            return np.arange(RTT_COARSE_BASE, RTT_COARSE_BASE + RTT_COARSE, dtype=np.int64)
        return np.arange(RTT_FINE_BASE, RTT_FINE_BASE + RTT_FINE, dtype=np.int64)

    def success_mask(self, prefix: np.ndarray) -> np.ndarray:
        prefix = np.asarray(prefix, np.int64)
        b, t = prefix.shape
        self._check(t)
        return np.ones((b, RTT_COARSE if t == 0 else RTT_FINE), bool)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, np.int64)
        c, f = tokens[..., 0] - RTT_COARSE_BASE, tokens[..., 1] - RTT_FINE_BASE
        if np.any((c < 0) | (c >= RTT_COARSE) | (f < 0) | (f >= RTT_FINE)):
            raise DecodeError("v2 RTT: expected a coarse then a fine token")
        return RTT_CENTRES[c * RTT_FINE + f]

    def encode(self, values: np.ndarray) -> np.ndarray:
        level = rtt_levels(np.asarray(values, np.float64))
        if np.any(level < 0):
            raise ValueError(f"v2 RTT: values outside [{RTT_LO}, {RTT_HI}) ms have no scale tokens")
        return np.stack([RTT_COARSE_BASE + level // RTT_FINE, RTT_FINE_BASE + level % RTT_FINE], axis=-1)


def _token_names() -> tuple[str, ...]:
    names = [f"byte{b:02x}" for b in range(NUM_BYTES)]
    names += ["Src4", "Src6", "Dst4", "Dst6", "Time32", "Time64", "Delta16"]
    names += [f"Delta{d}" for d in range(DELTA_COUNT)] + ["RttFail", "RttExact"]
    names += [f"RttCoarse{c}" for c in range(RTT_COARSE)] + [f"RttFine{f}" for f in range(RTT_FINE)]
    names += ["Size16"] + [f"Size{v}" for v in range(SIZE_COUNT)] + [f"Err{v}" for v in range(ERR_COUNT)]
    names.append("PAD")
    assert len(names) == VOCAB_SIZE
    return tuple(names)


def _field_spec() -> FieldSpec:
    # kinds: 0 source header, 1 time, 2 destination, 3 size, 4 errors, 5 rtt
    block = np.full(VOCAB_SIZE, -1, np.int32)
    block[[SRC4, SRC6]] = 0
    block[[TIME32, TIME64, DELTA16]] = 1
    block[DELTA_BASE : DELTA_BASE + DELTA_COUNT] = 1
    block[[DST4, DST6]] = 2
    block[SIZE16] = 3
    block[SIZE_BASE : SIZE_BASE + SIZE_COUNT] = 3
    block[ERR_BASE : ERR_BASE + ERR_COUNT] = 4
    block[[RTT_FAIL, RTT_EXACT]] = 5
    block[RTT_COARSE_BASE : RTT_COARSE_BASE + RTT_COARSE] = 5
    return FieldSpec(block_kind=block, kinds=6, max_offset=16)


def _groups() -> dict:
    ids = np.arange(VOCAB_SIZE)
    kind = KIND[:VOCAB_SIZE]
    return {
        "byte_tokens": kind == K_BYTE,
        "source_tokens": kind == K_SRC,
        "time_tokens": (kind == K_TIME_ABS) | (kind == K_DELTA),
        "destination_tokens": kind == K_DST,
        "size_tokens": kind == K_SIZE,
        "error_tokens": kind == K_ERR,
        "rtt_tokens": (kind == K_RTT) | (kind == K_FINE),
        "pad_tokens": ids == PAD,
    }


class SchemeV2(Scheme):
    """The compact scheme: runs of one source, time deltas, a 2-token log-scale RTT; no msm_id."""

    name = "v2"
    version = 1
    vocab_size = VOCAB_SIZE
    pad_id = PAD
    keeps_msm_id = False
    min_seq_len = SRC_LEN[6] + 9 + DST_LEN[6] + 3 + 1 + 9  # the longest single measurement, as a run start
    item_lengths = None  # variable: the packer plans runs (packing.plan_runs) and assemble() lays them out
    rtt = _V2Rtt()
    field_spec = _field_spec()
    token_names = _token_names()
    block_names = ("dst_addr", "size", "packet_error_count", "rtt")  # stored in this order: evaluation's
    field_orders = np.array(list(itertools.permutations(range(4))), dtype=np.int8)  # (24, 4)
    eval_order = 0
    kind_names = ("src_addr", "timestamp", "dst_addr", "size", "errors", "rtt")
    structural_ids = np.zeros(VOCAB_SIZE, bool)  # every id carries a value of its field
    token_groups = _groups()
    grammar = grammar_v2  # tokenizer.grammar_v2: the record state machine for constrained decoding

    legend = f"bytes 0-255, field tokens 256-{VOCAB_SIZE - 2}, PAD {PAD}"

    def encode_table(self, table) -> EncodedTable:
        return encode_table(table)

    def parse_records(self, records: np.ndarray, *, first_record: int = 0) -> Parsed:
        return parse_records(records, first_record=first_record)

    def survey(self, records: np.ndarray) -> Survey:
        return survey(records)

    Items = Items  # the items assemble() lays out (the pack stage builds them)

    @staticmethod
    def head_lengths(items: Items):
        return head_lengths(items)

    @staticmethod
    def assemble(items: Items, seq_len: int, record_first: np.ndarray) -> np.ndarray:
        return assemble(items, seq_len, record_first)

    def rtt_prompt_at(self, record: np.ndarray, start: int, end: int) -> np.ndarray:
        """The record before the measurement, its head (the run's source header where it opens a run, and its
        time), then its destination, size and error count; the RTT's coarse token comes next. On disk these
        are already in this order; a record in another of v2's field orders is put back into it."""
        record = np.asarray(record, np.int64)
        m = record[start:end]
        kind = KIND[m]
        opener = np.flatnonzero((kind != K_BYTE) & (kind != K_FINE))
        ends = np.append(opener[1:], len(m))
        head, fields = [], {}
        for s, e in zip(opener.tolist(), ends.tolist()):
            k = int(kind[s])
            if k in (K_SRC, K_TIME_ABS, K_DELTA) and not fields:
                head.append(m[s:e])
            elif k in (K_DST, K_SIZE, K_ERR, K_RTT) and k not in fields and head:
                fields[k] = m[s:e]
            else:
                raise DecodeError(f"tokens {start}..{end} of the record are not one v2 measurement")
        if len(fields) != 4:
            raise DecodeError(f"tokens {start}..{end} of the record are not one v2 measurement (fields missing)")
        return np.concatenate([record[:start], *head, fields[K_DST], fields[K_SIZE], fields[K_ERR]])

    def rtt_prompt(self, context: np.ndarray, row: Mapping) -> np.ndarray:
        """The prompt for the RTT of a measurement given by its known fields, after ``context`` (a record's
        earlier tokens: whole measurements, or nothing): ``row`` holds ``src_addr`` and ``event_time`` (epoch
        seconds, or a datetime; None: the prompt is the source header alone, the time to be drawn), and any of ``dst_addr``, ``size``, ``packet_error_count``. The head is what
        the pretokenizer writes after that context: a time delta where the context's last run is this
        source and the delta is shorter, else the source header and the absolute time; the given fields
        follow in evaluation's order. Raises ValueError for a destination of the other family."""
        context = np.asarray(context, np.int64)
        version, src = _address(row["src_addr"])
        if row.get("event_time") is None:  # only the run's source header: the time is to be drawn
            return np.concatenate([context, np.array([SRC4 if version == 4 else SRC6, *src], np.int64)])
        ts = row["event_time"] if isinstance(row["event_time"], (int, np.integer)) else epoch_seconds(row["event_time"])
        previous = None
        if len(context):
            parsed = parse_records(context[None])
            if len(parsed):
                key = np.zeros(2, np.uint64)
                word = int.from_bytes(src, "big")
                if version == 4:
                    key[1] = _V4_MAPPED | np.uint64(word)
                else:
                    key[:] = (word >> 64, word & ((1 << 64) - 1))
                if np.array_equal(parsed.src[-1], key) and int(parsed.timestamp[-1]) <= ts:
                    previous = int(parsed.timestamp[-1])
        if previous is None:
            head = [SRC4 if version == 4 else SRC6, *src, *_absolute(ts)]
        else:
            head = _delta_head(ts, previous)
        body = []
        if row.get("dst_addr") is not None:
            dst_version, dst = _address(row["dst_addr"])
            if dst_version != version:
                raise ValueError(f"src_addr {row['src_addr']} and dst_addr {row['dst_addr']} are of different families")
            body += [DST4 if version == 4 else DST6, *dst]
        if row.get("size") is not None:
            size = int(row["size"])
            body += [SIZE_BASE + size] if size < SIZE_COUNT else [SIZE16, *_be(size, 2)]
        if row.get("packet_error_count") is not None:
            body.append(ERR_BASE + int(row["packet_error_count"]))
        return np.concatenate([context, np.array(head + body, np.int64)])

    restart_id = PAD  # what a finished sample feeds the model while others finish (PAD opens no field)

    @staticmethod
    def current_measurement(prompt) -> np.ndarray:
        """The tokens a prompt's last measurement needs to decode: from its run's source header."""
        prompt = np.asarray(prompt, np.int64)
        heads = np.flatnonzero(np.isin(prompt, (SRC4, SRC6)))
        if not len(heads):
            from tokenizer.grammar import GrammarError

            raise GrammarError("a v2 prompt must contain the source header of the run to continue")
        return prompt[heads[-1] :]

    def sample_state(self, prompt: np.ndarray):
        """The state after the prompt, read from its last run's source header (a header resets everything the
        grammar tracks, so the tokens before it need not be read again)."""
        return grammar_v2.state_of(self.current_measurement(prompt))

    def decode_sample(self, prompt: np.ndarray, generated: np.ndarray) -> dict:
        generated = np.asarray(generated, np.int64)
        return self.decode_record(np.concatenate([np.asarray(prompt, np.int64), generated[generated != PAD]]))[-1]


V2 = SchemeV2()


def reference_records(rows: Sequence[Mapping], seq_len: int) -> list[list[int]]:
    """Per-row reference of a whole pack: ``rows`` in (source, time) order, laid greedily into records of
    ``seq_len`` (a record ends where the next row does not fit), each record's tokens without PAD."""
    out: list[list[int]] = []
    current: list[int] = []
    prev = None
    for row in rows:
        same = prev is not None and row["src_addr"] == prev["src_addr"]
        tokens = reference_measurement(row, prev if same and current else None)
        if len(current) + len(tokens) > seq_len:
            out.append(current)
            current = []
            tokens = reference_measurement(row, None)
        current += tokens
        prev = row
    if current:
        out.append(current)
    return out


__all__ = ["V2", "SchemeV2", "Items", "assemble", "encode_table", "parse_records", "reference_measurement",
           "reference_records", "address_words"]
