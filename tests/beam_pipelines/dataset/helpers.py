"""Builders for the contract tests: a tiny hand-made dataset (seq_len 8) laid out and described as
pretokenize does, and a manifest editor."""

from __future__ import annotations

import json
import os

import numpy as np

from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.records import write_records

SEQ_LEN = 8


def tiny_records(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 267, size=(n, SEQ_LEN), dtype=np.uint16)  # (n, seq_len)


def write_tiny_dataset(root: str) -> dict:
    """train (two files), val and test (one empty file) under ``root``, and the manifest; returns it."""
    splits = {}
    for seed, (name, sizes) in enumerate((("train", (5, 3)), ("val", (2,)), ("test", (0,)))):
        os.makedirs(os.path.join(root, name))
        files = []
        for i, n in enumerate(sizes):
            rel = f"{name}/{name}-{i:05d}-of-{len(sizes):05d}.array_record"
            info = write_records(os.path.join(root, rel), tiny_records(n, 10 * seed + i), "zstd:3")
            files.append({"path": rel, **info})
        splits[name] = {"records": sum(f["records"] for f in files), "files": files}
    manifest = {
        "format_version": manifest_lib.FORMAT_VERSION,
        "tokenizer": manifest_lib.tokenizer_info(),
        "seq_len": SEQ_LEN,
        "splits": splits,
        "fingerprint": manifest_lib.fingerprint([], {"seq_len": SEQ_LEN}),
    }
    manifest_lib.write_json_atomic(os.path.join(root, manifest_lib.MANIFEST_NAME), manifest)
    return manifest


def edit_manifest(root: str, edit) -> dict:
    """Apply ``edit`` to ``root``'s manifest (in place, on disk); returns the edited manifest."""
    path = os.path.join(root, manifest_lib.MANIFEST_NAME)
    with open(path) as f:
        manifest = json.load(f)
    edit(manifest)
    with open(path, "w") as f:
        json.dump(manifest, f)
    return manifest


def append_tiny_version(root: str, manifest: dict, created: str = "2026-11-30T10:00:00Z") -> dict:
    """Add a version 2 to the tiny dataset at ``root`` as ``pretokenize --append`` lays it out: new files
    named ``{split}-v00002-...`` (train one, test one), earlier files untouched; returns the new manifest."""
    versions = manifest_lib.dataset_versions(manifest)
    splits = {}
    for seed, (name, sizes) in enumerate((("train", (4,)), ("val", ()), ("test", (1,)))):
        files = []
        for i, n in enumerate(sizes):
            rel = f"{name}/{name}-v00002-{i:05d}-of-{len(sizes):05d}.array_record"
            info = write_records(os.path.join(root, rel), tiny_records(n, 100 + 10 * seed + i), "zstd:3")
            files.append({"path": rel, **info})
        splits[name] = {"records": sum(f["records"] for f in files), "files": files}
    inputs = [{"path": "new.parquet", "sha256": "cd" * 32, "bytes": 7, "rows": 5}]
    entry = {
        "version": 2,
        "created": created,
        "fingerprint": manifest_lib.version_fingerprint(versions[-1]["fingerprint"], inputs, {"seq_len": SEQ_LEN}),
        "inputs": inputs,
        "options": {"seq_len": SEQ_LEN},
        "splits": splits,
    }
    new = manifest_lib.combine_versions(manifest, [*versions, entry])
    manifest_lib.write_json_atomic(os.path.join(root, manifest_lib.MANIFEST_NAME), new)
    return new
