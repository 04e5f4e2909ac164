"""Scheme v2's record reader (layout in :mod:`tokenizer.v2`): :func:`parse_records`, the one vectorized parser
that checks a block of records' whole grammar and returns their measurements, and :func:`survey`, counts read
from the field ids alone.
"""

from __future__ import annotations

import numpy as np

from tokenizer import vocab_v2 as vocab
from tokenizer.errors import DecodeError
from tokenizer.schemes import Parsed, Survey


def _bytes_at(padded: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(padded, width)[pos].astype(np.uint8)  # (n, width)


def _big_endian(raw: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(raw).view(dtype)[:, 0].astype(np.dtype(dtype).newbyteorder("="))


def parse_records(records: np.ndarray, *, first_record: int = 0) -> Parsed:
    """The measurements of a block of v2 records ((records, seq_len) uint16), in reading order.

    Checks the whole grammar of every record (each id where it may stand, every payload, runs opened by a
    source with an absolute time, vocab.PAD a suffix) and raises :class:`~tokenizer.errors.DecodeError` naming
    the first bad record.
    """
    records = np.asarray(records)
    n_rec, seq_len = records.shape
    flat = records.reshape(-1).astype(np.int64)
    kind = vocab.KIND[flat]
    where = f"records {first_record}..{first_record + n_rec - 1}"

    def fail(mask_or_pos, what):
        bad = int(np.flatnonzero(mask_or_pos)[0]) if np.asarray(mask_or_pos).dtype == bool else int(mask_or_pos)
        raise DecodeError(f"record {first_record + bad // seq_len}, position {bad % seq_len}: {what}")

    if np.any(kind < 0):
        fail(kind < 0, f"token {int(flat[kind < 0][0])} is outside the v2 vocabulary")
    is_pad = kind == vocab.K_PAD
    rows_pad = is_pad.reshape(n_rec, seq_len)
    body_len = np.where(rows_pad.any(axis=1), rows_pad.argmax(axis=1), seq_len)
    if np.any(rows_pad.sum(axis=1) != seq_len - body_len):
        fail(np.repeat(rows_pad.sum(axis=1) != seq_len - body_len, seq_len), "PAD is only allowed as a suffix")
    # Every opening id is followed by exactly its payload: walk the openers and check what they cover.
    opener = (kind != vocab.K_BYTE) & (kind != vocab.K_FINE) & ~is_pad
    op_pos = np.flatnonzero(opener)
    follow = vocab.FOLLOW[flat[op_pos]].astype(np.int64)
    covered = np.zeros(len(flat) + 1, np.int64)
    np.add.at(covered, op_pos + 1, 1)
    np.add.at(covered, np.minimum(op_pos + 1 + follow, len(flat)), -1)
    inside = np.cumsum(covered[:-1]) > 0  # position lies in some opener's payload
    expect_payload = (kind == vocab.K_BYTE) | (kind == vocab.K_FINE)
    if np.any(inside != expect_payload):
        fail(inside != expect_payload, "a field's payload is cut short or a byte stands outside any field")
    end_of = op_pos + 1 + follow
    if len(op_pos) and np.any((end_of - 1) // seq_len != op_pos // seq_len):
        fail(op_pos[(end_of - 1) // seq_len != op_pos // seq_len][0], "a field runs past its record")
    fine_pos = np.flatnonzero(kind == vocab.K_FINE)
    coarse = (flat >= vocab.RTT_COARSE_BASE) & (flat < vocab.RTT_COARSE_BASE + vocab.RTT_COARSE)
    if len(fine_pos) != int(coarse.sum()) or np.any(~coarse[fine_pos - 1]):
        # a fine token without its coarse one, or a coarse token with no fine one after it (at a record's end)
        lone = ((kind == vocab.K_FINE) & ~np.roll(coarse, 1)) | (coarse & ~np.append(kind[1:] == vocab.K_FINE, False))
        fail(lone, "an RTT fine token must follow a coarse one")
    if np.any((kind == vocab.K_BYTE) & (np.roll(kind, 1) == vocab.K_RTT) & (np.roll(flat, 1) != vocab.RTT_EXACT)):
        fail((kind == vocab.K_BYTE) & (np.roll(kind, 1) == vocab.K_RTT), "bytes after a coarse RTT token")

    # Measurements: each opens with a time (absolute or delta), then dst, size, errors and rtt once each.
    src_pos = np.flatnonzero(kind == vocab.K_SRC)
    time_pos = np.flatnonzero((kind == vocab.K_TIME_ABS) | (kind == vocab.K_DELTA))
    n = len(time_pos)
    following = np.append(time_pos[1:], len(flat))
    field_pos = {}
    fields = ((vocab.K_DST, "destination"), (vocab.K_SIZE, "size"), (vocab.K_ERR, "error count"), (vocab.K_RTT, "RTT"))
    for k, name in fields:
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
        if np.any(nxt >= n) or np.any(time_pos[np.minimum(nxt, n - 1)] != src_pos + 1 + vocab.FOLLOW[flat[src_pos]]):
            fail(src_pos[0], "a source header must be followed directly by a measurement")
        if np.any(kind[time_pos[nxt]] != vocab.K_TIME_ABS):
            fail(time_pos[nxt][kind[time_pos[nxt]] != vocab.K_TIME_ABS][0], "a run must start with an absolute time")
        inside_meas = nxt > 0
        if np.any(src_pos[inside_meas] < last_field[nxt[inside_meas] - 1]):
            fail(src_pos[inside_meas][0], "a source header inside a measurement")
    record_starts = np.arange(n_rec) * seq_len
    nonempty = body_len > 0
    if np.any(kind[record_starts[nonempty]] != vocab.K_SRC):
        not_source = record_starts[nonempty][kind[record_starts[nonempty]] != vocab.K_SRC]
        fail(not_source[0], "a record must start with a source")

    tail = max(16, 8) + 1
    padded = np.concatenate([flat, np.zeros(tail, np.int64)])
    # source and family from each measurement's run header
    run_src = src_pos[run_of] if n else np.zeros(0, np.int64)
    src_v4 = flat[run_src] == vocab.SRC4
    src, family = _keys(padded, run_src, src_v4)
    dpos = field_pos[vocab.K_DST]
    dst_v4 = flat[dpos] == vocab.DST4
    if np.any(dst_v4 != src_v4):
        fail(dpos[dst_v4 != src_v4][0], "destination and source of different families")
    dst, _ = _keys(padded, dpos, dst_v4)
    # time
    tid = flat[time_pos]
    value = np.zeros(n, np.int64)
    is32, is64, is16 = tid == vocab.TIME32, tid == vocab.TIME64, tid == vocab.DELTA16
    small = (tid >= vocab.DELTA_BASE) & (tid < vocab.DELTA_BASE + vocab.DELTA_COUNT)
    value[is32] = _big_endian(_bytes_at(padded, time_pos[is32] + 1, 4), ">u4")
    value[is64] = _big_endian(_bytes_at(padded, time_pos[is64] + 1, 8), ">i8")
    value[is16] = _big_endian(_bytes_at(padded, time_pos[is16] + 1, 2), ">u2")
    value[small] = tid[small] - vocab.DELTA_BASE
    absolute = is32 | is64
    delta = np.where(absolute, 0, value)
    cd = np.cumsum(delta)
    seg = np.maximum.accumulate(np.where(absolute, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    timestamp = value[seg] + cd - cd[seg]
    # size, errors
    spos = field_pos[vocab.K_SIZE]
    sid = flat[spos]
    size = np.where(sid == vocab.SIZE16, 0, sid - vocab.SIZE_BASE)
    big = sid == vocab.SIZE16
    size[big] = _big_endian(_bytes_at(padded, spos[big] + 1, 2), ">u2")
    errors = flat[field_pos[vocab.K_ERR]] - vocab.ERR_BASE
    # rtt
    rpos = field_pos[vocab.K_RTT]
    rid = flat[rpos]
    rtt = np.full(n, -1.0)
    ok = (rid >= vocab.RTT_COARSE_BASE) & (rid < vocab.RTT_COARSE_BASE + vocab.RTT_COARSE)
    level = (rid[ok] - vocab.RTT_COARSE_BASE) * vocab.RTT_FINE + (flat[rpos[ok] + 1] - vocab.RTT_FINE_BASE)
    rtt[ok] = vocab.RTT_CENTRES[level]
    ex = rid == vocab.RTT_EXACT
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
        blocks=np.stack([dpos, spos, field_pos[vocab.K_ERR], rpos], axis=1).astype(np.int64),  # (n, 4) canonical
    )


_V4_MAPPED = np.uint64(0xFFFF << 32)


def address_key(version: int, packed: bytes) -> np.ndarray:
    """The (2,) uint64 key :func:`parse_records` gives an address (an IPv4 one mapped into IPv6, ::ffff:a.b.c.d)."""
    key = np.zeros(2, np.uint64)
    word = int.from_bytes(packed, "big")
    if version == 4:
        key[1] = _V4_MAPPED | np.uint64(word)
    else:
        key[:] = (word >> 64, word & ((1 << 64) - 1))
    return key


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
    kind = vocab.KIND[np.minimum(flat, len(vocab.KIND) - 1)]
    src_pos = np.flatnonzero(kind == vocab.K_SRC)
    src_pos = src_pos[src_pos + 1 + vocab.FOLLOW[flat[src_pos]] <= len(flat)]
    v4 = flat[src_pos] == vocab.SRC4
    padded = np.concatenate([flat, np.zeros(17, np.int64)])
    keys, family = _keys(padded, src_pos, v4) if len(src_pos) else (np.zeros((0, 2), np.uint64), np.zeros(0, np.int8))
    time = (kind == vocab.K_TIME_ABS) | (kind == vocab.K_DELTA)
    time_pos = np.flatnonzero(time)
    run = np.searchsorted(src_pos, time_pos, side="right") - 1
    known = run >= 0
    n4 = int(np.count_nonzero(v4[run[known]])) if len(src_pos) else 0
    return Survey(
        measurements=time.reshape(records.shape).sum(axis=1).astype(np.int64),
        starts_ok=(records[:, 0] == vocab.PAD) | np.isin(records[:, 0], (vocab.SRC4, vocab.SRC6)),
        source_family=family,
        source_key=keys,
        ipv4_measurements=n4,
        ipv6_measurements=int(np.count_nonzero(known)) - n4,
    )
