"""The global shuffle of the training stream: one numpy permutation of a host's record keys per epoch.

Read position ``r`` of a stream over ``n`` records is key ``epoch_permutation(n, seed, r // n)[r % n]``:
a function of the position alone, so a resumed run reads exactly the records it would have read.
"""

from __future__ import annotations

import numpy as np

from beam_pipelines.common.hashing import MASK64, splitmix64


def epoch_permutation(n: int, seed: int, epoch: int, segment: int = 0) -> np.ndarray:
    """The order of this host's ``n`` record keys in ``epoch``: a permutation drawn by numpy's PCG64
    Generator seeded with ``(splitmix64(seed), epoch)`` (uint32 when it fits: 4 bytes a record, per process).
    Segment ``k > 0`` of a run moved to a newer dataset version (:class:`trainer.train_stream.Segment`) seeds it with
    ``(splitmix64(seed), epoch, k)``: orders of its own, while segment 0 keeps the run's first orders."""
    entropy = [splitmix64(int(seed) & MASK64), int(epoch)] + ([int(segment)] if segment else [])
    rng = np.random.default_rng(entropy)
    return rng.permutation(np.arange(n, dtype=np.uint32 if n < 2**32 else np.int64))


def shuffled_keys(positions: np.ndarray, n: int, seed: int, cache: dict | None = None, segment: int = 0) -> np.ndarray:
    """The record keys read at stream ``positions`` (a global shuffle, a new order each epoch): read
    position ``r`` is key ``epoch_permutation(n, seed, r // n, segment)[r % n]``. ``cache`` keeps the last
    two epochs' permutations, so a batch costs one gather."""
    positions = np.asarray(positions, dtype=np.int64)  # (B,)
    epoch, x = np.divmod(positions, n)  # (B,), (B,)
    cache = {} if cache is None else cache
    out = np.empty(len(positions), np.int64)
    for e in np.unique(epoch).tolist():
        if e not in cache:
            for old in sorted(cache)[:-1]:  # keep at most two
                del cache[old]
            cache[e] = epoch_permutation(n, seed, e, segment)
        sel = epoch == e
        out[sel] = cache[e][x[sel]]
    return out
