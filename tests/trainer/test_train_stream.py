"""The training stream (trainer/train_stream.py): shuffling, sharding, chunks of batches, resumable state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.trainer.helpers import make_config, record_hashes, split_hashes
from trainer import augment, data, example, record_reader, train_stream


def _epoch_hashes(ds, config, process_index=0, process_count=1, epochs=2) -> list[list[str]]:
    stream = train_stream.train_dataset(
        ds, config.train_split, batch_size=1, seed=config.seed, augment_fields=False,
        process_index=process_index, process_count=process_count,
    )
    per_host = ds.num_records(config.train_split) // process_count
    hashes = [record_hashes(stream[i])[0] for i in range(epochs * per_host)]  # (1, L) uint16 token batches
    return [hashes[e * per_host : (e + 1) * per_host] for e in range(epochs)]


def test_global_shuffle_gives_a_new_order_each_epoch(sample_dataset):
    config = make_config(sample_dataset, "train_split=val", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    first, second = _epoch_hashes(ds, config)
    on_disk = split_hashes(ds, "val")
    assert sorted(first) == sorted(second) == sorted(on_disk)  # each epoch reads every record once
    assert first != on_disk and second != first  # shuffled, and differently each epoch
    again, _ = _epoch_hashes(ds, config)
    assert again == first  # deterministic for the seed
    other_seed, _ = _epoch_hashes(ds, make_config(sample_dataset, "train_split=val", "seed=1", "num_workers=0"))
    assert other_seed != first


def test_hosts_read_disjoint_parts(sample_dataset):
    config = make_config(sample_dataset, "train_split=val", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    parts = [set(sum(_epoch_hashes(ds, config, i, 3, epochs=2), [])) for i in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not parts[i] & parts[j]
    n = ds.num_records("val")
    assert sum(len(p) for p in parts) == n - n % 3


def test_per_host_batches_and_global_read_indices(sample_dataset):
    config = make_config(sample_dataset, "batch_size=8", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    a = train_stream.train_iterator(ds, config, process_index=0, process_count=2)
    b = train_stream.train_iterator(ds, config, process_index=1, process_count=2)
    batch_a, batch_b = next(a), next(b)
    assert batch_a["inputs"].shape == (4, 1024)
    assert not set(record_hashes(batch_a["inputs"].astype(np.uint16))) & set(record_hashes(batch_b["inputs"].astype(np.uint16)))


@pytest.mark.parametrize("workers, bound", [(0, 200), pytest.param(2, 400, marks=pytest.mark.slow)])
def test_iterator_state_is_small_and_resumes_exactly(sample_dataset, workers, bound):
    config = make_config(sample_dataset, "batch_size=4", f"num_workers={workers}")
    ds = data.open_dataset(str(sample_dataset), config)
    iterator = train_stream.train_iterator(ds, config)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    assert len(json.dumps(state)) < bound  # threads: the next index; processes: each worker's next index
    expected = [next(iterator) for _ in range(2)]
    resumed = train_stream.train_iterator(ds, config)
    resumed.set_state(json.loads(json.dumps(state)))
    try:
        for want in expected:
            got = next(resumed)
            for key in want:
                assert np.array_equal(got[key], want[key])
    finally:
        for it in (iterator, resumed):
            if hasattr(it, "close"):
                it.close()


@pytest.mark.slow
def test_multiprocess_prefetch_gives_the_same_batches_and_resumes(sample_dataset):
    threads = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    procs = make_config(sample_dataset, "batch_size=4", "num_workers=2")
    ds = data.open_dataset(str(sample_dataset), threads)
    ref = train_stream.train_iterator(ds, threads)
    want = [next(ref) for _ in range(4)]
    it = train_stream.train_iterator(ds, procs)
    try:
        got = [next(it) for _ in range(3)]
        state = json.loads(json.dumps(it.get_state()))
    finally:
        it.close()
    resumed = train_stream.train_iterator(ds, procs)
    try:
        resumed.set_state(state)
        got.append(next(resumed))
    finally:
        resumed.close()
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g["inputs"], w["inputs"])


@pytest.mark.slow
def test_one_and_two_workers_give_identical_batches(sample_dataset):
    """With augmentation: every batch is a function of its index, whichever process makes it."""
    runs = {}
    for workers in (0, 1, 2):
        config = make_config(sample_dataset, "batch_size=4", f"num_workers={workers}")
        iterator = train_stream.train_iterator(data.open_dataset(str(sample_dataset), config), config)
        try:
            runs[workers] = [next(iterator) for _ in range(6)]
        finally:
            if hasattr(iterator, "close"):
                iterator.close()
    for workers in (1, 2):
        for got, want in zip(runs[workers], runs[0], strict=True):
            assert set(got) == set(want)
            for key in want:
                assert np.array_equal(got[key], want[key]), (workers, key)


def _stream_batches(ds, config, n: int) -> list[dict]:
    """Batches 0..n-1 built from the batch-sized stream, one Grain element per batch (the definition)."""
    stream = train_stream.train_dataset(ds, config.train_split, batch_size=config.batch_size, seed=config.seed,
                                augment_fields=config.augment)
    return [example.make_example(stream[j], ds.pad_id) for j in range(n)]


@pytest.mark.parametrize("chunk_records", [8, 20, 256])
def test_chunks_of_batches_give_the_batches_of_the_stream(sample_dataset, monkeypatch, chunk_records):
    """However many batches a Grain element holds (K = 2, 5, 64 here), the batches are the stream's."""
    monkeypatch.setattr(train_stream, "CHUNK_RECORDS", chunk_records)
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    want = _stream_batches(ds, config, 11)
    iterator = train_stream.train_iterator(ds, config)
    assert iterator.chunk == -(-chunk_records // 4)
    for j, w in enumerate(want):
        got = next(iterator)
        assert set(got) == set(w)
        for key in w:
            assert np.array_equal(got[key], w[key]), (j, key)


def test_resuming_inside_a_chunk_and_old_state_forms(sample_dataset, monkeypatch):
    monkeypatch.setattr(train_stream, "CHUNK_RECORDS", 12)  # 3 batches of 4 per element
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    want = _stream_batches(ds, config, 9)
    # The first hash-v1 pipeline's states: threads {"next_index"}, worker processes Grain's interleave state.
    legacy_workers = {"next_index_in_cycle": 1, "next_index_in_datasets": 2, "iterators_in_use_indices": [0, 1],
                      "iterators_in_use_states": [{"next_index": 3}, {"next_index": 2}], "exhausted": [0, 0],
                      "future_states": {}}
    for state, first in [({"next_batch": 4}, 4), ({"next_batch": 6}, 6), ({"next_index": 7}, 7), (legacy_workers, 5)]:
        iterator = train_stream.train_iterator(ds, config)
        next(iterator)  # a stream already running is replaced
        iterator.set_state(state)
        assert iterator.get_state() == {"next_batch": first}
        for j in range(first, 9):
            assert np.array_equal(next(iterator)["inputs"], want[j]["inputs"]), (state, j)
        assert iterator.get_state() == {"next_batch": 9}
    with pytest.raises(ValueError, match="not a training iterator state"):
        train_stream.train_iterator(ds, config).set_state({"something": 1})


def test_chunk_augmentation_in_slices_equals_the_whole_chunk(sample_dataset, monkeypatch):
    config = make_config(sample_dataset)
    ds = data.open_dataset(str(sample_dataset), config)
    batch = record_reader.batch_reader(ds, "train", 150, seed=2)(3)  # 150 records: slices of 64, 64 and 22
    whole = augment.augment_batch(batch["tokens"], 9, batch["index"])
    assert np.array_equal(train_stream.AugmentChunk(9)(batch), whole)
    monkeypatch.setattr(train_stream, "AUGMENT_ROWS", 7)
    assert np.array_equal(train_stream.AugmentChunk(9)(batch), whole)


@pytest.mark.slow
def test_workers_resume_from_a_state_taken_with_another_worker_count(sample_dataset):
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    want = _stream_batches(ds, config, 70)  # past the first chunk of 64 batches
    threads = train_stream.train_iterator(ds, config)
    for _ in range(61):
        next(threads)
    state = json.loads(json.dumps(threads.get_state()))
    resumed = train_stream.train_iterator(ds, make_config(sample_dataset, "batch_size=4", "num_workers=2"))
    try:
        resumed.set_state(state)
        for j in range(61, 70):
            assert np.array_equal(next(resumed)["inputs"], want[j]["inputs"]), j
    finally:
        resumed.close()
