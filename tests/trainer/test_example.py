"""Model inputs (trainer/example.py): targets are the inputs shifted by one, PAD targets weigh nothing."""

from __future__ import annotations

import numpy as np

from tests.trainer.helpers import make_config, record_hashes, split_hashes
from tokenizer import PAD
from trainer import data, train_stream
from trainer.example import make_example


def test_targets_are_inputs_shifted_by_one_on_real_batches(sample_dataset):
    config = make_config(sample_dataset, "batch_size=8", "augment=false", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    iterator = train_stream.train_iterator(ds, config)
    records = set(split_hashes(ds, "train"))
    for _ in range(3):
        batch = next(iterator)
        inputs, targets = batch["inputs"], batch["targets"]
        assert inputs.shape == targets.shape == (8, 1024) and inputs.dtype == np.int32
        assert np.array_equal(targets[:, :-1], inputs[:, 1:])  # the shift
        assert np.all(targets[:, -1] == PAD)
        assert not np.array_equal(targets, inputs)
        # Without augmentation the inputs are the records on disk, unchanged.
        assert set(record_hashes(inputs.astype(np.uint16))) <= records


def test_shift_holds_with_augmentation_too(sample_dataset):
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    batch = next(train_stream.train_iterator(data.open_dataset(str(sample_dataset), config), config))
    assert np.array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])


def test_pad_targets_get_weight_zero(sample_dataset):
    config = make_config(sample_dataset, "batch_size=16", "augment=false", "num_workers=0")
    batch = next(train_stream.train_iterator(data.open_dataset(str(sample_dataset), config), config))
    assert np.array_equal(batch["weights"], (batch["targets"] != PAD).astype(np.float32))
    assert (batch["weights"] == 0).any() and (batch["weights"] == 1).any()
    # A hand-made record: 3 real tokens then PAD -> exactly the first two targets count.
    tokens = np.full((1, 6), PAD, dtype=np.uint16)
    tokens[0, :3] = [0, 1, 3]
    example = make_example(tokens, PAD)
    assert example["targets"].tolist() == [[1, 3, PAD, PAD, PAD, PAD]]
    assert example["weights"].tolist() == [[1, 1, 0, 0, 0, 0]]
