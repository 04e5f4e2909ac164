"""64-bit hashing that the jobs and the trainer share: Vigna's splitmix64 finaliser and a chain hash of words.

splitmix64 adds 0x9E3779B97F4A7C15, then xor-shift-multiplies by 0xBF58476D1CE4E5B9 and 0x94D049BB133111EB
with shifts 30, 27 and 31, all modulo 2**64: a bijection of the 64-bit integers that mixes every input bit
into every output bit. The chain hash of words ``w1, w2, ...`` is ``h = 0; h = splitmix64(h XOR w)`` for
each. The splits and buckets of pretokenize, the sketches of stats, the trainer's data order and field-order
augmentation and the evaluation's samples are all computed with these, so changing them changes those
outputs. (The tokenizer's field order is part of the token format and keeps a private copy in
``tokenizer/order.py``; a test checks the two agree.)

It imports no Beam, so the trainer may import it.
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def splitmix64(x: int) -> int:
    """splitmix64 of a Python int in [0, 2**64)."""
    z = (x + _GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def splitmix64_np(x: np.ndarray) -> np.ndarray:
    """splitmix64 of each element of a uint64 array (numpy's integer arithmetic wraps modulo 2**64)."""
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def hash_words_np(words: list[np.ndarray]) -> np.ndarray:
    """The chain hash of each row of ``words`` (uint64 arrays of one length): ``h = splitmix64(h XOR w)``
    over the words in order, from ``h = 0``."""
    h = np.zeros(len(words[0]), dtype=np.uint64)
    tmp = np.empty_like(h)
    for w in words:
        h ^= w
        # splitmix64 in place: a new array per operation would cost more than the arithmetic on large inputs.
        h += np.uint64(_GOLDEN)
        for shift, multiplier in ((30, _M1), (27, _M2)):
            np.right_shift(h, np.uint64(shift), out=tmp)
            h ^= tmp
            h *= np.uint64(multiplier)
        np.right_shift(h, np.uint64(31), out=tmp)
        h ^= tmp
    return h
