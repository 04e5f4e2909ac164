"""The encode stage's bucket files: rows ordered by (bucket, family), each row's tokens copied whole."""

from __future__ import annotations

import numpy as np
import pytest

from beam_pipelines.pretokenize.stages import encode
from tokenizer import IPV4_LENGTH, IPV6_LENGTH


@pytest.mark.parametrize("num_buckets", [3, 1 << 15])
def test_bucket_family_order_equals_lexsort(num_buckets):
    rng = np.random.default_rng(num_buckets)
    bucket = rng.integers(0, num_buckets, 4000).astype(np.int64)
    family = np.where(rng.random(4000) < 0.3, 6, 4).astype(np.int8)
    np.testing.assert_array_equal(encode._bucket_family_order(bucket, family), np.lexsort((family, bucket)))


def test_bucket_batches_copy_each_rows_tokens_whole(tmp_path):
    """Rows of both families in several buffered parts: each bucket's batch holds every row's own tokens."""
    rng = np.random.default_rng(5)
    parts, expected = [], {}
    for p in range(3):
        family = np.where(rng.random(50) < 0.4, 6, 4).astype(np.int8)
        lengths = np.where(family == 4, IPV4_LENGTH, IPV6_LENGTH)
        start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        tokens = rng.integers(0, 266, int(lengths.sum())).astype(np.uint16)
        bucket = rng.integers(0, 3, 50)
        part = {k: np.full(50, p) for k in encode._PART_COLUMNS}
        part.update(family=family, row=np.arange(50) + 100 * p, bucket=bucket, tokens=tokens, start=start)
        parts.append(part)
        for i in range(50):
            expected[(int(bucket[i]), 100 * p + i)] = (int(family[i]), tokens[start[i] : start[i] + lengths[i]].tolist())
    found = {}
    for bucket, batch in encode._bucket_batches(parts):
        families = batch.column("family").to_pylist()
        assert families == sorted(families)  # IPv4 rows first
        for row, fam, toks in zip(batch.column("row").to_pylist(), families, batch.column("tokens").to_pylist()):
            found[(bucket, row)] = (fam, toks)
    assert found == expected
