"""Trainer fixtures: small pretokenized datasets in the DESIGN.md data contract."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from beam_pipelines import synth
from tokenizer import PAD, TOKENIZER_NAME, TOKENIZER_VERSION, VOCAB_SIZE, encode_table

SEQ_LEN = 1024


def pack(tokens: np.ndarray, offsets: np.ndarray, seq_len: int = SEQ_LEN) -> np.ndarray:
    """Trivial greedy packing: whole measurements in input order, a new record when the next does not fit."""
    records, current = [], []
    used = 0
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        if used + (hi - lo) > seq_len:
            records.append(np.concatenate(current))
            current, used = [], 0
        current.append(tokens[lo:hi])
        used += hi - lo
    if current:
        records.append(np.concatenate(current))
    out = np.full((len(records), seq_len), PAD, dtype=np.uint16)
    for i, r in enumerate(records):
        out[i, : len(r)] = r
    return out


def write_split(root: pathlib.Path, split: str, records: np.ndarray, num_files: int) -> dict:
    (root / split).mkdir(parents=True, exist_ok=True)
    files = []
    for i, part in enumerate(np.array_split(records, num_files)):
        rel = f"{split}/{split}-{i:05d}-of-{num_files:05d}.array_record"
        writer = ArrayRecordWriter(str(root / rel), "group_size:1")
        for row in part.astype("<u2"):
            writer.write(row.tobytes())
        writer.close()
        data = (root / rel).read_bytes()
        files.append({"path": rel, "records": len(part), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return {
        "records": int(len(records)),
        "measurements": int((records == 0).sum()),
        "tokens": int((records != PAD).sum()),
        "pad_tokens": int((records == PAD).sum()),
        "sources": 0,
        "files": files,
    }


def make_dataset(root: pathlib.Path, rows: int = 6000, seed: int = 0, files_per_split: int = 2) -> pathlib.Path:
    """Synthetic rows -> encode_table -> trivial packing -> train/val/test ArrayRecord files + manifest.json."""
    encoded = encode_table(synth.generate(rows, seed=seed))
    records = pack(encoded.tokens, encoded.offsets)
    n = len(records)
    n_val = n_test = max(2, n // 10)
    splits = {"train": records[: n - n_val - n_test], "val": records[n - n_val - n_test : n - n_test], "test": records[n - n_test :]}
    manifest = {
        "format_version": 1,
        "tokenizer": {"name": TOKENIZER_NAME, "version": TOKENIZER_VERSION, "vocab_size": VOCAB_SIZE, "pad_id": PAD},
        "seq_len": SEQ_LEN,
        "splits": {name: write_split(root, name, recs, files_per_split) for name, recs in splits.items()},
        "rejected": {"total": int(len(encoded.rejected)), "by_reason": encoded.reason_counts()},
        "inputs": [{"path": "synthetic", "bytes": 0, "rows": rows}],
        "options": {"seed": seed, "rows": rows, "packing": "test-greedy"},
        "fingerprint": hashlib.sha256(f"synthetic:{rows}:{seed}".encode()).hexdigest(),
    }
    with open(root / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=2)
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> pathlib.Path:
    """About 300 records of 1024 tokens (train ~240, val ~30, test ~30); do not modify."""
    return make_dataset(tmp_path_factory.mktemp("synthetic_dataset"))


@pytest.fixture
def dataset_copy(synthetic_dataset, tmp_path) -> pathlib.Path:
    """A private copy of the synthetic dataset that a test may damage."""
    import shutil

    dst = tmp_path / "dataset"
    shutil.copytree(synthetic_dataset, dst)
    return dst


def env_for_subprocess(repo_root: pathlib.Path, **extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo_root) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env
