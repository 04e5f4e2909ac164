"""The global shuffle (trainer/shuffle.py): a permutation per epoch, a function of the read position."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import shuffle


@pytest.mark.parametrize("n", [1, 2, 3, 7, 591, 5335])
def test_the_shuffle_is_a_permutation_per_epoch(n):
    keys = shuffle.shuffled_keys(np.arange(3 * n), n, seed=11)
    epochs = keys.reshape(3, n)  # (epochs, n)
    for e in range(3):
        assert sorted(epochs[e].tolist()) == list(range(n))
    if n >= 7:
        assert epochs[0].tolist() != list(range(n))  # shuffled
        assert epochs[0].tolist() != epochs[1].tolist()  # a new order each epoch
        assert keys.tolist() != shuffle.shuffled_keys(np.arange(3 * n), n, seed=12).tolist()
    # Any subset of positions gets the keys the whole stream gives them (workers compute their own batches).
    pick = np.array([3 * n - 1, 0, n // 2])
    assert shuffle.shuffled_keys(pick, n, seed=11).tolist() == keys[pick].tolist()
