"""The evaluation stream (trainer/eval_stream.py): the whole split, one batch shape, field kinds."""

from __future__ import annotations

import numpy as np

from tests.trainer.helpers import make_config
from trainer import data, eval_stream


def test_eval_batches_cover_the_split_with_kinds(sample_dataset):
    config = make_config(sample_dataset)
    ds = data.open_dataset(str(sample_dataset), config)
    batches = list(eval_stream.eval_batches(ds, "val", batch_size=64))
    n = ds.num_records("val")
    assert len(batches) == -(-n // 64)
    assert all(b["inputs"].shape == (64, 1024) for b in batches)
    real_rows = sum(int((b["weights"].sum(axis=1) > 0).sum()) for b in batches)
    assert real_rows == n
    kinds = np.concatenate([b["kinds"].ravel() for b in batches])
    weights = np.concatenate([b["weights"].ravel() for b in batches])
    assert np.all((kinds >= 0) == (weights > 0))
    assert len(list(eval_stream.eval_batches(ds, "val", batch_size=8, max_batches=3))) == 3
