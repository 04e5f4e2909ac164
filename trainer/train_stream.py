"""The training stream: a resumable iterator of this host's shuffled, augmented training batches.

Per host (one Grain element per chunk of K batches; no stage works record by record)::

    MapDataset.range(...).repeat()                    # element e is chunk c0 + e of an endless stream
      .map_with_index(batch_reader)                   # read positions of the chunk -> keys of this host's part
                                                      #   (trainer.shuffle: a numpy permutation per epoch) ->
                                                      #   one batched ArrayRecord read per file
                                                      #   (trainer.record_reader) -> (K*B, L) uint16
      .map(AugmentChunk)                              # counter-based field-order augmentation (hash-v1)
      .to_iter_dataset(ReadOptions(...))              # prefetch threads (trainer.prefetch)
      .mp_prefetch(...)                               # worker processes (num_workers; -1: one per core)
    TrainIterator                                     # in the training process: the chunk's K batches one at
                                                      #   a time, with shift and loss weights (trainer.example)

Every stage is a function of the batch index, so the iterator's whole state is the next batch index,
whatever the number of workers, and resuming from it replays exactly the same batches. A dataset is
opened at one version (``config.data_version``; a resumed run's is its checkpoint's) and reads that
version's files only; a run moved to a newer version reads its stream in :class:`Segment` s. A chunk of K
batches (about :data:`CHUNK_RECORDS` records) per Grain element spreads Grain's fixed cost per element
(queues, a shared-memory block, the interleave threads; about 0.3 ms) over more records.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import grain
import numpy as np

from beam_pipelines.dataset import DatasetError
from tokenizer import get_scheme
from trainer import augment
from trainer.config import Config
from trainer.data import Dataset
from trainer.example import make_example
from trainer.prefetch import prefetch, resolve_workers
from trainer.record_reader import batch_reader


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of a training stream that reads one dataset version: from batch ``start_batch`` on (until
    the next segment's), the ``records`` records of the train split at ``version``.

    A run has one segment (``start_batch`` 0) until ``advance_data_version`` moves it to a newer version at
    step ``s``: a second segment then starts at batch ``s`` and reads epochs over all the newer version's
    records, shuffled afresh (segment ``k``'s epoch ``e`` is ``epoch_permutation(n_k, seed, e, k)``), from
    its own epoch 0. The earlier segments stay in the stream's definition, so its batch ``j`` is still a
    function of ``j`` alone and a resumed run replays it exactly.
    """

    start_batch: int  # the first batch (= training step) of the segment
    version: int  # the dataset version read
    records: int  # the train split's records at that version (all hosts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


AUGMENT_ROWS = 64  # records augmented together: a chunk's (K*B*L,) int64 index arrays left the cache and the
                   # heap (4.8 page faults and 8 us of system time a record at 256 records; none at 64)


class AugmentChunk:
    """Batched {"tokens", "index"} -> augmented (B, L) uint16 tokens (what worker processes send back:
    2 bytes a token through shared memory, not the 12 of the model's int32/int32/float32 inputs)."""

    def __init__(self, augment_seed: int | None, tokenizer: str = "v1", eval_share: float = 0.0):
        self.augment_seed, self.tokenizer, self.eval_share = augment_seed, tokenizer, eval_share

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        tokens = batch["tokens"]  # (B, L)
        if self.augment_seed is None:
            return tokens
        out = np.empty_like(tokens)  # (B, L)
        step = AUGMENT_ROWS or len(tokens)
        for a in range(0, len(tokens), step):  # records are independent: a chunk is augmented in slices
            out[a : a + step] = augment.augment_batch(tokens[a : a + step], self.augment_seed, batch["index"][a : a + step],
                                                      get_scheme(self.tokenizer), self.eval_share)
        return out


def train_dataset(
    dataset: Dataset,
    split: str,
    *,
    batch_size: int,
    seed: int,
    augment_fields: bool = True,
    eval_order_share: float = 0.0,
    process_index: int = 0,
    process_count: int = 1,
    start: int = 0,
    in_workers: bool = False,
    segments: list[tuple[int, int]] | None = None,
) -> grain.MapDataset:
    """The infinite training stream of ``batch_size``-record batches for one host, as a ``MapDataset`` of
    augmented (B, L) uint16 token arrays (:func:`make_example` turns one into model inputs); element
    ``e`` is batch ``start + e``. Batch ``j`` of size ``K * B`` holds batches ``K*j .. K*j+K-1`` of size
    ``B``, the same records with the same augmentation. ``in_workers``: read for a worker process
    (:data:`WORKER_READER_OPTIONS`). ``segments``: the stream's segments as (first read position of this
    host, records of ``split``), each reading the first that many records of ``dataset``'s files (a run
    moved to a newer version, :class:`Segment`); default one, all of them."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for {process_count} processes")
    total = dataset.num_records(split) if not segments else segments[-1][1]
    local = (total - total % process_count) // process_count  # equal parts; host p reads keys p, p + hosts, ...
    if local == 0:
        raise DatasetError(f"{dataset.root}: split {split} has no records for host {process_index} of {process_count}")
    # One element per batch: batch j holds read positions j*B .. j*B+B-1, whose keys (the global shuffle)
    # and records (one batched read) are computed together, so no stage works record by record.
    ds = grain.MapDataset.range(max(local // batch_size, 1)).repeat()
    ds = ds.map_with_index(batch_reader(dataset, split, batch_size, seed=seed, process_index=process_index,
                                        process_count=process_count, start=start, in_workers=in_workers,
                                        segments=segments))
    return ds.map(AugmentChunk(seed if augment_fields else None, dataset.manifest["tokenizer"]["name"], eval_order_share))


CHUNK_RECORDS = 256  # records per Grain element (whole batches): Grain's ~0.3 ms per element is ~1 us a record


def chunk_batches(batch_size: int) -> int:
    """Batches per Grain element for ``batch_size``-record batches: enough for about :data:`CHUNK_RECORDS`."""
    return max(1, -(-CHUNK_RECORDS // batch_size))


def train_iterator(
    dataset: Dataset,
    config: Config,
    *,
    process_index: int = 0,
    process_count: int = 1,
    segments: list[Segment] | None = None,
) -> TrainIterator:
    """A resumable iterator of this host's training batches (``config.batch_size // process_count`` records).

    Its ``get_state()`` is a small JSON-able dict (the next batch index); ``set_state`` resumes exactly
    where it was taken, with any number of workers. ``segments``: the versions the stream reads from which
    batch on (a run moved on with ``advance_data_version``); default one segment, ``dataset`` from batch 0.
    The last segment reads ``dataset``; earlier ones the first records of its files (an earlier version's).
    """
    if config.batch_size % process_count:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {process_count} processes")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for {process_count} processes")
    batch_size = config.batch_size // process_count
    chunk = chunk_batches(batch_size)
    positions = None
    if segments:
        if segments[-1].records != dataset.num_records(config.train_split):
            raise ValueError(f"the last segment ({segments[-1]}) is not the dataset's version {dataset.version} "
                             f"({dataset.num_records(config.train_split)} {config.train_split} records)")
        positions = [(sg.start_batch * batch_size, sg.records) for sg in segments]  # read positions of this host

    def stream(first_chunk: int) -> grain.DatasetIterator:
        ds = train_dataset(
            dataset,
            config.train_split,
            batch_size=batch_size * chunk,
            seed=config.seed,
            augment_fields=config.augment,
            eval_order_share=config.eval_order_share,
            process_index=process_index,
            process_count=process_count,
            start=first_chunk,
            in_workers=resolve_workers(config) > 0,
            segments=positions,
        )
        return prefetch(ds, config, chunk).__iter__()

    return TrainIterator(stream, batch_size, chunk, dataset.pad_id)


class TrainIterator:
    """The training batches of one host, from a Grain stream of chunks of ``chunk`` batches.

    The state is ``{"next_batch": N}``; the Grain stream (and its worker processes) starts at the chunk
    holding batch N on the first ``next`` after creation or ``set_state``. Model inputs
    (:func:`make_example`) are built here, one batch at a time.
    """

    def __init__(self, stream, batch_size: int, chunk: int, pad_id: int):
        self._stream, self.batch_size, self.chunk, self.pad_id = stream, batch_size, chunk, pad_id
        self._next = 0  # the next batch's index in the stream
        self._it: grain.DatasetIterator | None = None
        self._tokens: np.ndarray | None = None  # the current chunk's (K * B, L) tokens
        self._row = 0  # the current chunk's next row

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._tokens is None:
            if self._it is None:
                self._it = self._stream(self._next // self.chunk)
                self._row = self._next % self.chunk * self.batch_size  # resuming inside a chunk
            else:
                self._row = 0
            self._tokens = next(self._it)  # (K * B, L) uint16
        # Per batch, not per chunk: arrays of one batch are reused by the allocator; a chunk's (several MB)
        # went back to the kernel and faulted in again (about 3 page faults a record).
        batch = make_example(self._tokens[self._row : self._row + self.batch_size], self.pad_id)
        self._row += self.batch_size
        if self._row == len(self._tokens):
            self._tokens = None
        self._next += 1
        return batch

    def get_state(self) -> dict:
        return {"next_batch": self._next}

    def set_state(self, state: Mapping) -> None:
        """Resume at ``state["next_batch"]``. The states of the first ``hash-v1`` pipeline (one Grain
        element per batch) give the same position: ``next_index`` with threads, and with worker processes
        the sum of every worker's ``next_index`` (workers take batches in turn)."""
        if "next_batch" in state:
            position = state["next_batch"]
        elif "next_index" in state:
            position = state["next_index"]
        elif "iterators_in_use_states" in state:
            position = sum(int(s["next_index"]) for s in state["iterators_in_use_states"])
        else:
            raise ValueError(f"not a training iterator state: {json.dumps(state)[:200]}")
        self.close()
        self._next, self._tokens = int(position), None

    def close(self) -> None:
        """Stop the worker processes, if any (the next ``next`` starts them again, at the next batch)."""
        # The current chunk lives in a shared-memory block that Grain unlinks when the array is freed (in a
        # background thread): freed first, it is gone by the time the workers have stopped, not left to
        # interpreter exit, where the unlink can be dropped and the block reported leaked.
        self._tokens = None
        if self._it is not None:
            if hasattr(self._it, "close"):
                self._it.close()
            self._it = None
