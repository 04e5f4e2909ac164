"""ping-llm trainer: Grain input pipeline, Flax NNX decoder, optax training loop, Orbax checkpoints.

Public API, by module (import the module you need: ``from trainer import data``; the package itself imports
nothing, so ``trainer.config`` and ``trainer.augment`` stay free of JAX):

* ``trainer.config``: ``Config``, ``ModelConfig``, ``load_config``, ``ConfigError``
* ``trainer.data``: ``open_dataset`` (at a dataset version; training and evaluation), ``Dataset``, ``DatasetError``
* ``trainer.checksum_cache``: ``ChecksumCache`` (the sha256 check once per dataset and host)
* ``trainer.train_stream``: ``train_iterator``, ``TrainIterator``, ``Segment``, ``train_dataset``
* ``trainer.shuffle``: ``epoch_permutation``, ``shuffled_keys`` (the global shuffle)
* ``trainer.record_reader``: ``batch_reader``, ``DataReadError``
* ``trainer.prefetch``: ``prefetch``, ``resolve_workers``, ``die_with_parent``
* ``trainer.example``: ``make_example`` (token batches -> model inputs)
* ``trainer.eval_stream``: ``eval_batches``
* ``trainer.augment``: ``permute_fields``, ``augment_batch``, ``field_kinds``, ``KIND_NAMES``
* ``trainer.model``: ``Decoder``, ``create``, ``count_params``, ``flops_per_token``
* ``trainer.train_state``: ``make_optimizer``, ``init_state``
* ``trainer.steps``: ``make_train_step`` (the pure ``train_step``), ``make_eval_step``, ``token_losses``
* ``trainer.checkpoint``: ``Checkpointer``
* ``trainer.resume``: ``choose_data_version`` (which dataset version a run reads), ``check_resumable``,
  ``ResumeError``
* ``trainer.metrics_log``: ``MetricsLog``, ``read_metrics``
* ``trainer.preemption``: ``StopRequest``
* ``trainer.train``: ``train_and_evaluate``, ``run`` (the CLI)
"""

__all__ = [
    "augment", "checkpoint", "checksum_cache", "config", "data", "eval_stream", "example", "metrics_log", "model",
    "preemption", "prefetch", "record_reader", "resume", "shuffle", "steps", "train", "train_state", "train_stream",
]
