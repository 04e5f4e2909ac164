"""The training stream's reader (trainer/record_reader.py): batched reads, and a damaged data file met while training."""

from __future__ import annotations

import grain
import numpy as np
import pytest

from beam_pipelines.common.errors import exit_code
from tests.trainer.helpers import damage_one_record, make_config
from trainer import data, record_reader, shuffle, train_stream


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_a_damaged_file_names_the_file_and_record(dataset_copy, workers):
    val = dataset_copy / "val" / "val-00000-of-00001.array_record"
    bad = damage_one_record(val)
    config = make_config(dataset_copy, "train_split=val", "batch_size=64", f"num_workers={workers}",
                         "verify_checksums=false")
    ds = data.open_dataset(str(dataset_copy), config)  # sizes and record counts still agree
    iterator = train_stream.train_iterator(ds, config)
    try:
        with pytest.raises(record_reader.DataReadError) as err:
            for _ in range(ds.num_records("val") // 64 + 1):  # one epoch touches every record
                next(iterator)
    finally:
        if hasattr(iterator, "close"):
            iterator.close()
    message = str(err.value)
    assert f"{val}: record {bad} cannot be read" in message
    assert f"python -m beam_pipelines.stats --dataset {dataset_copy}" in message and "verify_checksums=true" in message
    assert exit_code(err.value) == 1


def test_batched_reads_equal_one_at_a_time_reads(sample_dataset):
    config = make_config(sample_dataset, "batch_size=8", "augment=false", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    source = grain.sources.ArrayRecordDataSource(ds.files("train"))
    reader = record_reader.batch_reader(ds, "train", 8, seed=3, process_index=1, process_count=2)
    keys = np.array([7, 0, 3, 3, 100, 2, 50, 1])  # any order, repeats allowed
    batch = reader.read(np.arange(40, 48), keys)
    want = np.stack([np.frombuffer(source[int(k) * 2 + 1], "<u2") for k in keys])  # (8, 1024)
    assert batch["tokens"].dtype == np.uint16 and np.array_equal(batch["tokens"], want)
    assert batch["index"].tolist() == [(40 + j) * 2 + 1 for j in range(8)]  # global read indices
    # Batch 5 of the stream: read positions 40..47, their keys from the global shuffle.
    local = ds.num_records("train") // 2
    keys = shuffle.shuffled_keys(np.arange(40, 48), local, 3)
    want = np.stack([np.frombuffer(source[int(k) * 2 + 1], "<u2") for k in keys])  # (8, 1024)
    assert np.array_equal(reader(5)["tokens"], want)
