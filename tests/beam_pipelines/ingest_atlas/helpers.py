"""Readers for ingest_atlas outputs, shared by the ingest tests."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

IN_MEMORY = "--direct_running_mode=in_memory"


def read_rows(out) -> pa.Table:
    """Every row shard of an output directory, in shard order."""
    names = sorted(n for n in os.listdir(out) if n.startswith("part-") and n.endswith(".parquet"))
    return pa.concat_tables(pq.read_table(os.path.join(out, n)) for n in names)


def read_rejected(out) -> pa.Table:
    folder = os.path.join(out, "rejected")
    names = sorted(os.listdir(folder))
    return pa.concat_tables(pq.read_table(os.path.join(folder, n)) for n in names)


def load_manifest(out) -> dict:
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def tree_bytes(out) -> dict[str, bytes]:
    """Every file under ``out`` (relative path -> bytes)."""
    found = {}
    for root, _, files in os.walk(out):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, out)] = f.read()
    return found
