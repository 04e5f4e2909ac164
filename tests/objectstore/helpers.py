"""Inputs for the object-store tests, and independent readers of what the jobs left in the store."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from beam_pipelines.make_sample import synth
from beam_pipelines.make_sample.shards import write_shards

BAD_ROWS = (5, 77, 1234)  # rows of the first shard whose src_addr is not an address


def make_raw(folder, rows: int = 6000, shards: int = 2) -> list[str]:
    """Synthetic measurements in ``shards`` Parquet files, with :data:`BAD_ROWS` of the first made invalid."""
    table = synth.generate(rows, seed=11)
    src = table.column("src_addr").to_pylist()
    for i in BAD_ROWS:
        if i < rows:
            src[i] = "not-an-address"
    table = table.set_column(table.schema.get_field_index("src_addr"), "src_addr", pa.array(src, pa.string()))
    return sorted(write_shards(table, str(folder), shards=shards, row_group_size=1000))


def upload_tree(s3, bucket: str, prefix: str, folder) -> None:
    """Every file under ``folder`` to ``s3://bucket/prefix/<relative path>`` (boto3, not our code)."""
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            s3.put_file(bucket, f"{prefix}/{os.path.relpath(path, folder)}", path)


def download_tree(s3, bucket: str, prefix: str, folder) -> list[str]:
    """Every object under ``s3://bucket/prefix/`` into ``folder``; returns the relative paths."""
    rels = []
    for key in s3.keys(bucket, prefix + "/"):
        rel = key[len(prefix) + 1 :]
        dest = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(s3.get(bucket, key))
        rels.append(rel)
    return sorted(rels)


def file_bytes(folder) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def records_bytes(folder) -> dict[str, bytes]:
    """The ArrayRecord files of a dataset folder by relative path."""
    return {k: v for k, v in file_bytes(folder).items() if k.endswith(".array_record")}


def all_records(folder, manifest) -> np.ndarray:
    from tests.beam_pipelines.pretokenize.helpers import read_split

    return np.concatenate([read_split(str(folder), manifest, s) for s in ("train", "val", "test")])
