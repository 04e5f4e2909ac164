"""The evaluation stream: this host's part of a split in file order, no augmentation, as model inputs
with field kinds, in batches of one shape (the last one filled with all-PAD rows)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grain
import numpy as np

import beam_pipelines.dataset as contract
from tokenizer import get_scheme
from trainer import augment
from trainer.data import Dataset
from trainer.example import make_example


def parse_record(raw: bytes, seq_len: int) -> np.ndarray:
    """One ArrayRecord record -> (seq_len,) uint16 token ids (:func:`beam_pipelines.dataset.decode_record`)."""
    return contract.decode_record(raw, seq_len)



class _Parse:
    """bytes at read index i -> {"tokens", "index"}; ``index`` is global across hosts (evaluation stream)."""

    def __init__(self, seq_len: int, process_index: int, process_count: int):
        self.seq_len, self.process_index, self.process_count = seq_len, process_index, process_count

    def __call__(self, index: int, raw: bytes) -> dict:
        return {
            "tokens": parse_record(raw, self.seq_len),
            "index": np.int64(index * self.process_count + self.process_index),
        }



class _Finish:
    """Batched {"tokens", "index"} -> model inputs, with field-order augmentation when ``seed`` is set."""

    def __init__(self, pad_id: int, augment_seed: int | None, kinds: bool = False, tokenizer: str = "v1"):
        self.pad_id, self.augment_seed, self.kinds, self.tokenizer = pad_id, augment_seed, kinds, tokenizer

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict:
        tokens = batch["tokens"]  # (B, L)
        scheme = get_scheme(self.tokenizer)
        if self.augment_seed is not None:
            tokens = augment.augment_batch(tokens, self.augment_seed, batch["index"], scheme)
        return make_example(tokens, self.pad_id, kinds=self.kinds, scheme=scheme)


def _shard(source, process_index: int, process_count: int) -> grain.MapDataset:
    """This host's part: every ``process_count``-th record, after dropping the remainder so parts are equal."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for {process_count} processes")
    ds = grain.MapDataset.source(source)
    usable = len(ds) - len(ds) % process_count
    return ds[:usable][process_index::process_count]


def eval_batches(
    dataset: Dataset,
    split: str,
    *,
    batch_size: int,
    max_batches: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """This host's part of ``split`` in file order, no augmentation, with field kinds.

    The last batch is filled with all-PAD rows (weight 0) so every batch has the same shape; every
    host yields the same number of batches.
    """
    source = grain.sources.ArrayRecordDataSource(dataset.files(split))
    ds = _shard(source, process_index, process_count)
    n = len(ds)
    if max_batches:
        ds = ds[: max_batches * batch_size]
    ds = ds.map_with_index(_Parse(dataset.seq_len, process_index, process_count))
    ds = ds.batch(batch_size, drop_remainder=False).map(
        _Finish(dataset.pad_id, None, kinds=True, tokenizer=dataset.manifest["tokenizer"]["name"]))
    read = grain.ReadOptions(num_threads=max(num_threads, 1), prefetch_buffer_size=4)
    if n == 0:
        return
    for batch in ds.to_iter_dataset(read):
        short = batch_size - len(batch["inputs"])
        if short:
            fill = {
                "inputs": np.full((short, dataset.seq_len), dataset.pad_id, np.int32),
                "targets": np.full((short, dataset.seq_len), dataset.pad_id, np.int32),
                "weights": np.zeros((short, dataset.seq_len), np.float32),
                "kinds": np.full((short, dataset.seq_len), augment.KIND_PAD, np.int8),
            }
            batch = {k: np.concatenate([v, fill[k]]) for k, v in batch.items()}
        yield batch
