"""The shared hashing: splitmix64's published values, the vectorized forms against the scalar one, and
agreement with the tokenizer's private copy (the field order must stay what it is; today the jobs and the
trainer hash with the same function)."""

from __future__ import annotations

import numpy as np

from beam_pipelines.common import hashing
from tokenizer import order

EDGES = [0, 1, 2, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF, 0x9E3779B97F4A7C15]


def _values(n: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(20261207)
    return np.concatenate([np.array(EDGES, np.uint64), rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)])


def test_splitmix64_published_values():
    # SplitMix64 seeded with 0: its first two outputs are the finaliser of 1 and 2 times the golden gamma.
    assert hashing.splitmix64(0) == 0xE220A8397B1DCDAF
    assert hashing.splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4


def test_vectorized_equals_scalar():
    xs = _values(2_000)
    assert hashing.splitmix64_np(xs).tolist() == [hashing.splitmix64(int(x)) for x in xs]
    a, b, c = xs.copy(), xs[::-1].copy(), np.roll(xs, 7)
    expected = []
    for words in zip(a.tolist(), b.tolist(), c.tolist()):
        h = 0
        for w in words:
            h = hashing.splitmix64(h ^ w)
        expected.append(h)
    assert hashing.hash_words_np([a, b, c]).tolist() == expected
    assert a.tolist() == xs.tolist()  # the words are left as they were


def test_agrees_with_the_tokenizers_field_order_hash():
    xs = _values()
    assert [hashing.splitmix64(int(x)) for x in xs] == [order._splitmix64(int(x)) for x in xs]
    words = [np.roll(xs, k) for k in range(7)] + [xs[::-1].copy()]  # eight words, as a measurement has
    assert (hashing.hash_words_np(words) % np.uint64(5040)).astype(np.int64).tolist() == order.order_index_np(words).tolist()
    assert hashing.hash_words_np(words).tolist() == order._hash_words_np(words).tolist()
