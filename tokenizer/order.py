"""The deterministic field order of a measurement.

The seven blocks of a measurement are written in an order computed from the measurement's own
content, so the same row gives the same tokens on every machine and run, while over many rows all
5040 orders occur about equally often. The function, in full:

1. Take eight unsigned 64-bit words (two's complement for signed values):
   ``msm_id``, ``timestamp`` (epoch seconds), the IEEE-754 bits of ``rtt`` (float64),
   the high and low 64 bits of the source address as an unsigned integer (IPv4: high = 0),
   the same for the destination, and ``size | packet_error_count << 16 | ip_version << 24``.
2. ``h = 0``; for each word ``w`` in that order: ``h = splitmix64(h XOR w)``, where splitmix64 is
   Vigna's finaliser (add 0x9E3779B97F4A7C15, then xor-shift-multiply by 0xBF58476D1CE4E5B9 and
   0x94D049BB133111EB with shifts 30, 27, 31), all modulo 2**64.
3. The order index is ``h mod 5040``; the order is that entry of the lexicographically sorted list of
   permutations of the canonical blocks (src, dst, rtt, size, errors, timestamp, msm_id).

Both a scalar (Python int) and a vectorized (numpy uint64) version are here; tests check they agree.
"""

from __future__ import annotations

import numpy as np

from tokenizer.vocab import NUM_ORDERS

MASK64 = (1 << 64) - 1
# The field order is part of the token format: it must never change, even if the hashing that the jobs
# and the trainer share (beam_pipelines/common/hashing.py, the same function today, which a test checks)
# one day does. So the tokenizer keeps its own private splitmix64 here, and no module outside tokenizer/
# may use it (the tokenizer, the ground floor, imports nothing from the packages above it).
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _splitmix64(x: int) -> int:
    """Scalar splitmix64 finaliser on a Python int (mod 2**64)."""
    z = (x + _GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def _hash_words(words: list[int]) -> int:
    """Scalar chain hash of a list of 64-bit words."""
    h = 0
    for w in words:
        h = _splitmix64(h ^ (w & MASK64))
    return h


def _splitmix64_inplace(z: np.ndarray, tmp: np.ndarray) -> None:
    """splitmix64 of each element of the uint64 array ``z``, computed in ``z`` itself (``tmp``: scratch of
    the same shape): a new array per operation would cost more than the arithmetic on large arrays."""
    z += np.uint64(_GOLDEN)
    for shift, multiplier in ((30, _M1), (27, _M2)):
        np.right_shift(z, np.uint64(shift), out=tmp)
        z ^= tmp
        z *= np.uint64(multiplier)
    np.right_shift(z, np.uint64(31), out=tmp)
    z ^= tmp


def _hash_words_np(words: list[np.ndarray]) -> np.ndarray:
    """Vectorized chain hash; each element of ``words`` is a uint64 array of the same length."""
    h = np.zeros(len(words[0]), dtype=np.uint64)
    tmp = np.empty_like(h)
    for w in words:
        h ^= w
        _splitmix64_inplace(h, tmp)
    return h


def order_index(words: list[int]) -> int:
    """Order index (0..5039) of one measurement from its eight content words."""
    return _hash_words(words) % NUM_ORDERS


def order_index_np(words: list[np.ndarray]) -> np.ndarray:
    """Vectorized :func:`order_index`."""
    return (_hash_words_np(words) % np.uint64(NUM_ORDERS)).astype(np.int64)
