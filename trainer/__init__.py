"""ping-llm trainer: Grain input pipeline, Flax NNX decoder, optax training loop, Orbax checkpoints.

Public API, by module (import the module you need: ``from trainer import data``; the package itself imports
nothing, so ``trainer.config`` and ``trainer.augment`` stay free of JAX):

* ``trainer.config``: ``Config``, ``ModelConfig``, ``load_config``, ``ConfigError``
* ``trainer.data``: ``open_dataset`` (at a dataset version), ``train_iterator``, ``Segment``, ``eval_batches``,
  ``make_example``, ``DatasetError``
* ``trainer.augment``: ``permute_fields``, ``augment_batch``, ``field_kinds``, ``KIND_NAMES``
* ``trainer.model``: ``Decoder``, ``create``, ``count_params``, ``flops_per_token``
* ``trainer.checkpoint``: ``Checkpointer``
* ``trainer.train``: ``train_and_evaluate``, ``run`` (the CLI), ``make_train_step``, ``read_metrics``,
  ``choose_data_version`` (which dataset version a run reads)
"""

__all__ = ["augment", "checkpoint", "config", "data", "model", "train"]
