"""Evaluation fixtures: the bundled sample pretokenized by the real job, and a tiny model trained on it."""

from __future__ import annotations

import pathlib

import pytest

from tests.trainer.helpers import make_config

# A model small enough that training a few steps and sampling take seconds on a busy CPU.
MINI = ["model.num_layers=1", "model.width=32", "model.num_heads=2", "model.mlp_dim=64"]
TRAIN_STEPS = 12


@pytest.fixture(scope="session")
def eval_dataset(sample_dataset) -> pathlib.Path:
    """The session's pretokenized bundled sample (tests/conftest.py); do not modify."""
    return sample_dataset


@pytest.fixture(scope="session")
def trained_workdir(eval_dataset, tmp_path_factory) -> pathlib.Path:
    """A workdir holding a checkpoint of a tiny model trained a few steps on the sample."""
    from trainer import train

    workdir = tmp_path_factory.mktemp("eval_workdir")
    config = make_config(
        eval_dataset,
        *MINI,
        f"steps={TRAIN_STEPS}",
        "batch_size=4",
        "warmup_steps=2",
        f"checkpoint_every={TRAIN_STEPS}",
        "eval_every=0",
        "eval_batches=1",
        "async_checkpointing=false",
        "num_workers=0",  # the same batches as with worker processes (tests/trainer/test_train_stream.py)
    )
    summary = train.train_and_evaluate(config, str(workdir))
    assert summary["step"] == TRAIN_STEPS
    return workdir


@pytest.fixture(scope="session")
def loaded_model(trained_workdir):
    from trainer.eval import sampling

    return sampling.load(str(trained_workdir))
