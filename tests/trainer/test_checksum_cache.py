"""The start-up check (trainer/checksum_cache.py): sizes and counts always, sha256 once per dataset and host."""

from __future__ import annotations

import pytest

from beam_pipelines.dataset import verify
from tests.trainer.helpers import make_config
from trainer import checksum_cache, data


def _count_sha256(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda path: calls.append(path) or real(path))
    return calls


def test_sha256_runs_once_per_dataset_and_host(dataset_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("PING_LLM_CACHE_DIR", str(tmp_path / "cache"))
    calls = _count_sha256(monkeypatch)
    config = make_config(dataset_copy)
    data.open_dataset(str(dataset_copy), config)
    assert len(calls) == 3  # one file per split in the sample
    data.open_dataset(str(dataset_copy), config)
    assert len(calls) == 3  # remembered
    assert (tmp_path / "cache" / checksum_cache.ChecksumCache.FILE).is_file()
    data.open_dataset(str(dataset_copy), make_config(dataset_copy, "checksum_cache=false"))
    assert len(calls) == 6  # not remembered when turned off
    data.open_dataset(str(dataset_copy), make_config(dataset_copy, "verify_checksums=false"))
    assert len(calls) == 6
    # A file written since the check (same size, one byte changed) is checked again, and refused.
    val = dataset_copy / "val" / "val-00000-of-00001.array_record"
    raw = bytearray(val.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    val.write_bytes(bytes(raw))
    with pytest.raises(data.DatasetError, match=r"val-00000-of-00001.array_record: sha256 differs"):
        data.open_dataset(str(dataset_copy), config)


def test_an_unwritable_checksum_cache_only_means_checking_every_time(dataset_copy, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PING_LLM_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be created
    calls = _count_sha256(monkeypatch)
    for _ in range(2):
        data.open_dataset(str(dataset_copy), make_config(dataset_copy))
    assert len(calls) == 6
