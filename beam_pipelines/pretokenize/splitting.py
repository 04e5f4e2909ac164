"""Assigning measurements to splits and to grouping buckets (pure functions).

``src`` mode sends every source address wholly to one split by a stable hash of the address, so val
and test measure generalisation to unseen probes. ``time`` mode cuts by timestamp (train earliest).
Buckets hash-partition sources so that one bucket at a time can be grouped in bounded memory; a
source always falls into exactly one bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from beam_pipelines.common.hashing import hash_words_np

_SPLIT_SALT = np.uint64(0x53504C4954)  # "SPLIT": keeps split and bucket hashes independent
_BUCKET_SALT = np.uint64(0x4255434B)  # "BUCK"


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"80,10,10"`` -> (0.8, 0.1, 0.1). Three non-negative numbers with a positive train share."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"--split {text!r}: expected three numbers like 80,10,10") from None
    if len(parts) != 3 or any(p < 0 or not np.isfinite(p) for p in parts) or parts[0] <= 0:
        raise ValueError(f"--split {text!r}: expected three non-negative numbers (train > 0) like 80,10,10")
    total = sum(parts)
    return tuple(p / total for p in parts)  # type: ignore[return-value]


def source_hash(src_words: np.ndarray, ip_version: np.ndarray) -> np.ndarray:
    """Stable 64-bit hash of each source address ((n, 2) uint64 words plus family)."""
    return hash_words_np([src_words[:, 0], src_words[:, 1], ip_version.astype(np.uint64)])


def split_by_source(src_hash: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of each row from its source hash."""
    u = (hash_words_np([src_hash ^ _SPLIT_SALT]) >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # [0, 1)
    cuts = np.cumsum(fractions)[:-1]
    return np.searchsorted(cuts, u, side="right").astype(np.int8)


def split_by_time(timestamp: np.ndarray, cut_points: Sequence[int]) -> np.ndarray:
    """Split index of each row from its epoch seconds: before the first cut is train, and so on."""
    return np.searchsorted(np.asarray(cut_points, dtype=np.int64), timestamp, side="right").astype(np.int8)


def bucket_of(src_hash: np.ndarray, num_buckets: int) -> np.ndarray:
    """Grouping bucket of each row; all rows of one source share a bucket."""
    return (hash_words_np([src_hash ^ _BUCKET_SALT]) % np.uint64(num_buckets)).astype(np.int64)


def time_cut_points(second_counts: Iterable[tuple[np.ndarray, np.ndarray]], fractions: Sequence[float]) -> list[int]:
    """Cut points (epoch seconds) so that about ``fractions`` of the rows fall in each split.

    ``second_counts`` yields ``(unique seconds, counts)`` pairs (e.g. one per row group). A cut point
    ``c`` sends rows with ``timestamp >= c`` to the next split; all rows of one second stay together.
    """
    seconds, counts = [], []
    for s, c in second_counts:
        seconds.append(np.asarray(s, dtype=np.int64))
        counts.append(np.asarray(c, dtype=np.int64))
    if not seconds:
        return [0, 0]
    s = np.concatenate(seconds)
    c = np.concatenate(counts)
    uniq, inverse = np.unique(s, return_inverse=True)
    totals = np.bincount(inverse, weights=c).astype(np.int64)
    cum = np.cumsum(totals)
    targets = np.cumsum(fractions)[:-1] * cum[-1]
    # First second whose cumulative count reaches the target: rows from the next second on go further.
    idx = np.searchsorted(cum, targets, side="left")
    return [int(uniq[min(i + 1, len(uniq) - 1)]) if i + 1 < len(uniq) else int(uniq[-1]) + 1 for i in idx]
