"""Which test measurements an evaluation scores.

Two ways, both seeded and deterministic:

- ``position`` (the default): a seeded choice among the split's measurements by their place in file order.
  Cheap, but the place of a row depends on how the dataset was packed, so two datasets of the same rows
  (a v1 and a v2 dataset, say) get different measurements.
- ``row``: the measurements whose seeded hash of (source, destination, time) is lowest. The hash depends on
  the row only, so every dataset of the same input, whatever its scheme or packing, scores the same rows
  and two evaluations can be paired measurement by measurement (:mod:`trainer.eval.compare`). It costs one
  more decode of the split (a hash per measurement, 8 bytes each, kept until the choice is made).
"""

from __future__ import annotations

import numpy as np

from beam_pipelines.common.hashing import hash_words_np
from beam_pipelines.dataset import DatasetError
from trainer.eval import columns

CHOOSE_BY = ("position", "row")


def choose(n_total: int, max_measurements: int, seed: int) -> np.ndarray:
    """Indices of the measurements to evaluate: all when ``max_measurements`` is 0 or covers them, else a
    seeded choice without replacement, sorted (file order), so the same arguments pick the same ones."""
    if max_measurements <= 0 or max_measurements >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=max_measurements, replace=False))


def row_hashes(dataset, split: str, seed: int) -> np.ndarray:
    """(n,) uint64, one per measurement of ``split`` in file order: a hash of the seed, the source and
    destination addresses (their 128-bit keys, as decoded) and the time in seconds. Rows that agree on
    those agree on the hash in any dataset; RTT, size and error count are left out because a scheme may
    quantise them (v2's RTT)."""
    addresses = columns.Addresses()
    address_hash = np.zeros(0, np.uint64)
    parts = []
    for _, cols in columns.iter_split(dataset, split, addresses):
        if len(addresses) > len(address_hash):  # hash each address once, when it is first seen
            words = addresses.words(len(address_hash))
            address_hash = np.concatenate([address_hash, hash_words_np([words[:, 0], words[:, 1]])])
        n = len(cols)
        parts.append(hash_words_np([np.full(n, seed, np.uint64), address_hash[cols.src], address_hash[cols.dst],
                                    cols.timestamp.astype(np.uint64)]))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def choose_rows(hashes: np.ndarray, max_measurements: int) -> np.ndarray:
    """Indices (file order) of the ``max_measurements`` lowest ``hashes``: all when 0 or covering them. Equal
    hashes (the same row twice) are taken in file order."""
    n = len(hashes)
    if max_measurements <= 0 or max_measurements >= n:
        return np.arange(n)
    return np.sort(np.argsort(hashes, kind="stable")[:max_measurements])


def chosen(dataset, split: str, n_total: int, max_measurements: int, seed: int, by: str = "position") -> np.ndarray:
    """The measurements of ``split`` to evaluate, chosen ``by`` position or row (:data:`CHOOSE_BY`)."""
    if by == "position":
        return choose(n_total, max_measurements, seed)
    if by == "row":
        if max_measurements <= 0 or max_measurements >= n_total:
            return np.arange(n_total)  # every measurement: no need to hash them
        hashes = row_hashes(dataset, split, seed)
        if len(hashes) != n_total:
            raise DatasetError(f"{dataset.root}: split {split!r} holds {len(hashes)} measurements but the "
                               f"manifest says {n_total}")
        return choose_rows(hashes, max_measurements)
    raise ValueError(f"choose by {by!r}: expected one of {', '.join(CHOOSE_BY)}")
