"""Packing whole measurements into fixed-length records (pure functions).

A record is a concatenation of *runs*: each run holds measurements of one source in time order, and
a source has at most one run per record; long histories continue in the next records. No measurement
is ever split and PAD is only a suffix.

Why a planner rather than first-fit: every source's measurements have one length (45 tokens for IPv4,
69 for IPv6), so a record is described by its composition ``(a, b)``: ``a`` short and ``b`` long
measurements. Some compositions waste almost nothing (12 x 45 + 7 x 69 = 1023 of 1024), but using only
them would drain one family early and leave the rest to pack alone (IPv6 alone wastes 58 of 1024). So
the planner picks the pair of compositions whose mix consumes both families in their true proportion
with the least padding (the optimum of the two-constraint linear programme lies on such a pair), and
alternates between them with a feedback rule that keeps consumption on that proportion.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokenizer import get_scheme
from tokenizer.spans import as_blocks, spans


@dataclasses.dataclass(frozen=True)
class PackResult:
    """Records of one (bucket, split) and their counts."""

    records: np.ndarray  # uint16, (num_records, seq_len)
    measurements: int
    tokens: int  # non-PAD tokens
    pad_tokens: int
    sources: int
    continuous: int  # measurements whose predecessor in the record is of the same source


def compositions(seq_len: int, short: int, long: int) -> list[tuple[int, int]]:
    """For each count ``b`` of long items, the most short items ``a`` that still fit; plus long items alone
    (needed to balance data that is almost all long items)."""
    comps = [((seq_len - b * long) // short, b) for b in range(seq_len // long + 1)]
    pure_long = (0, seq_len // long)
    return comps if pure_long in comps else comps + [pure_long]


def best_pair(seq_len: int, short: int, long: int, long_fraction: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two compositions whose mix has ``long_fraction`` long items and the least padding per token."""
    comps = [c for c in compositions(seq_len, short, long) if sum(c) > 0]
    frac = [b / (a + b) for a, b in comps]
    waste = [seq_len - a * short - b * long for a, b in comps]
    best, best_score = (comps[0], comps[0]), float("inf")
    for i, (ci, fi) in enumerate(zip(comps, frac)):
        if fi > long_fraction:
            continue
        for j, (cj, fj) in enumerate(zip(comps, frac)):
            if fj < long_fraction:
                continue
            ni, nj = sum(ci), sum(cj)
            num = long_fraction * ni - ci[1]  # >= 0: long items composition i lacks, per record
            den = cj[1] - long_fraction * nj  # >= 0: long items composition j has in excess
            if den == 0:
                score = waste[j] / seq_len
            elif num == 0:
                score = waste[i] / seq_len
            else:
                y = num / den  # records of j per record of i
                score = (waste[i] + waste[j] * y) / (seq_len * (1 + y))
            if score < best_score - 1e-12:
                best, best_score = (ci, cj), score
    return best


def plan_records(n_short: int, n_long: int, seq_len: int, short: int, long: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of short and long items in each record, consuming both streams completely.

    A Python loop per *record* (not per row): about one iteration per 20 measurements.
    """
    if short > seq_len or long > seq_len:
        raise ValueError(f"seq_len {seq_len} is shorter than one measurement ({max(short, long)} tokens)")
    f = n_long / (n_short + n_long) if n_short + n_long else 0.0
    lo, hi = best_pair(seq_len, short, long, f) if 0 < f < 1 else ((seq_len // short, 0), (0, seq_len // long))

    def fit(a: int, b: int, rem_a: int, rem_b: int) -> tuple[int, int]:
        a = min(a, rem_a)
        b = min((seq_len - a * short) // long, rem_b)
        a = min((seq_len - b * long) // short, rem_a)  # top up with short items if long ones ran out
        return a, b

    out_a, out_b = [], []
    used_a = used_b = 0
    # While both streams hold more than a record of either composition takes, fit() changes nothing
    # that depends on what remains, so the feedback rule alone picks each record: the same records as
    # the general loop below, at a fraction of its cost per record.
    hi_ab, lo_ab = fit(*hi, seq_len, seq_len), fit(*lo, seq_len, seq_len)  # no count in fit() exceeds seq_len
    need_a = max(1, hi[0], lo[0], hi_ab[0], lo_ab[0])
    need_b = max(1, hi_ab[1], lo_ab[1])
    if 0 < f < 1:
        last_a, last_b = n_short - need_a, n_long - need_b
        hi_a, hi_b = hi_ab
        lo_a, lo_b = lo_ab
        while used_a <= last_a and used_b <= last_b:
            # Feedback: take the long-heavier composition while long items lag their share.
            if used_b < f * (used_a + used_b):
                used_a += hi_a
                used_b += hi_b
                out_a.append(hi_a)
                out_b.append(hi_b)
            else:
                used_a += lo_a
                used_b += lo_b
                out_a.append(lo_a)
                out_b.append(lo_b)
    while used_a < n_short or used_b < n_long:
        rem_a, rem_b = n_short - used_a, n_long - used_b
        if rem_a and rem_b:
            a, b = hi if used_b < f * (used_a + used_b) else lo
        else:
            a, b = (seq_len // short, 0) if rem_a else (0, seq_len // long)
        a, b = fit(a, b, rem_a, rem_b)
        out_a.append(a)
        out_b.append(b)
        used_a += a
        used_b += b
    return np.array(out_a, dtype=np.int64), np.array(out_b, dtype=np.int64)


def pack_sorted(
    short_items: np.ndarray, short_source: np.ndarray, long_items: np.ndarray, long_source: np.ndarray, seq_len: int,
    pad_id: int | None = None,
) -> PackResult:
    """Pack two streams of fixed-length items, each in (source, time) order, into ``seq_len`` records.

    ``short_items`` is (n_short, short) and ``long_items`` (n_long, long) uint16 (for v1: the IPv4
    measurements, 45 tokens, and the IPv6 ones, 69); ``*_source`` give each item's source id. A source
    must not appear in both streams (true for v1: a source address has one family). ``pad_id``: the
    scheme's PAD (None: v1's).
    """
    pad = get_scheme("v1").pad_id if pad_id is None else pad_id
    short, long = short_items.shape[1], long_items.shape[1]
    if _may_share_a_source(short_source, long_source) and np.intersect1d(short_source, long_source).size:
        raise ValueError("a source has items of two lengths")
    a_counts, b_counts = plan_records(len(short_items), len(long_items), seq_len, short, long)
    r = len(a_counts)
    out = np.empty((r, seq_len), dtype=np.uint16)
    # Within a record the short part comes first, then the long part, then PAD. Each item is copied
    # whole to its place (one opaque value per item, tokenizer.spans), and the PAD tails are written
    # per distinct tail start (a few: the planner alternates between two compositions).
    record_start = np.arange(r, dtype=np.int64) * seq_len
    used = a_counts * short + b_counts * long
    continuous = 0
    for items, src, counts, part_start in (
        (short_items, short_source, a_counts, record_start),
        (long_items, long_source, b_counts, record_start + a_counts * short),
    ):
        if not len(items):
            continue
        record = np.repeat(np.arange(r), counts)  # the record of each item
        first = np.cumsum(counts) - counts  # each record's first item of this stream
        rank = np.arange(len(items)) - first[record]  # the item's place in its record's part
        at = part_start[record] + rank * items.shape[1]
        spans(out, 2 * items.shape[1])[2 * at] = as_blocks(np.ascontiguousarray(items, dtype=np.uint16))
        # An item follows another of the same stream in the same record unless it opens its part.
        continuous += int(np.count_nonzero((rank[1:] > 0) & (src[1:] == src[:-1])))
    tails, tail_of = np.unique(used, return_inverse=True)
    by_tail = np.argsort(tail_of, kind="stable")
    bounds = np.searchsorted(tail_of[by_tail], np.arange(len(tails) + 1))
    for tail, lo, hi in zip(tails.tolist(), bounds[:-1], bounds[1:]):
        out[by_tail[lo:hi], tail:] = pad
    tokens_used = short_items.size + long_items.size
    n = len(short_items) + len(long_items)
    return PackResult(
        records=out,
        measurements=n,
        tokens=tokens_used,
        pad_tokens=r * seq_len - tokens_used,
        sources=_distinct(short_source) + _distinct(long_source),
        continuous=continuous,
    )


def _is_grouped_ascending(ids: np.ndarray) -> bool:
    return bool(np.all(ids[1:] >= ids[:-1]))


def _distinct(ids: np.ndarray) -> int:
    """Distinct values of ``ids``: a count of changes when they ascend (as the job's source ids do),
    instead of a sort or hash of every item."""
    if _is_grouped_ascending(ids):
        return int(np.count_nonzero(ids[1:] != ids[:-1])) + 1 if len(ids) else 0
    return int(np.unique(ids).size)


def _may_share_a_source(a: np.ndarray, b: np.ndarray) -> bool:
    """False when ``a`` and ``b`` certainly share no value: both empty, or their ranges do not meet."""
    if not len(a) or not len(b):
        return False
    return not (a.max() < b.min() or b.max() < a.min())


def plan_runs(start_len: np.ndarray, cont_len: np.ndarray, seq_len: int) -> np.ndarray:
    """Record bounds for items of any lengths, in (source, time) order, laid greedily: a record takes items
    while the next one fits. An item costs ``start_len`` where it opens a run (its record's first item; a
    scheme's item that starts a new source has ``cont_len == start_len``) and ``cont_len`` elsewhere.

    Returns ``bounds`` (records + 1,): record ``k`` holds items ``bounds[k]:bounds[k + 1]``. Each record
    ends with less room than its next item needs, so the padding is below one item per record. One
    ``searchsorted`` per record, no Python per item.
    """
    start_len = np.asarray(start_len, np.int64)
    cont_len = np.asarray(cont_len, np.int64)
    n = len(start_len)
    if n and int(start_len.max()) > seq_len:
        raise ValueError(f"seq_len {seq_len} is shorter than one item ({int(start_len.max())} tokens)")
    cum = np.zeros(n + 1, np.int64)
    np.cumsum(cont_len, out=cum[1:])
    extra = start_len - cont_len
    bounds = [0]
    i = 0
    while i < n:
        j = int(np.searchsorted(cum, cum[i] - extra[i] + seq_len, side="right")) - 1
        i = max(j, i + 1)
        bounds.append(min(i, n))
    return np.array(bounds, np.int64)
