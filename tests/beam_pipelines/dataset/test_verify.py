"""verify_file and verify_dataset: the listed files against the manifest, each error naming the file."""

from __future__ import annotations

import os
import pathlib

import pytest

from beam_pipelines.dataset import DatasetError, read_manifest
from beam_pipelines.dataset.verify import verify_dataset, verify_file
from tests.beam_pipelines.dataset.helpers import edit_manifest


def _verify(root, **kw):
    verify_dataset(root, read_manifest(root), **kw)


def test_a_complete_dataset_passes(tiny_dataset):
    _verify(tiny_dataset)
    _verify(tiny_dataset, checksums=True)
    entry = read_manifest(tiny_dataset)["splits"]["train"]["files"][0]
    assert verify_file(tiny_dataset, entry) == 5
    assert verify_file(tiny_dataset, entry, records=False) is None


def test_missing_file(tiny_dataset):
    rel = read_manifest(tiny_dataset)["splits"]["val"]["files"][0]["path"]
    os.remove(os.path.join(tiny_dataset, rel))
    with pytest.raises(DatasetError, match=f"^{os.path.join(tiny_dataset, rel)}: listed in the manifest but missing$"):
        _verify(tiny_dataset)


def test_size_differs(tiny_dataset):
    m = edit_manifest(tiny_dataset, lambda m: m["splits"]["train"]["files"][1].update(bytes=7))
    path = os.path.join(tiny_dataset, m["splits"]["train"]["files"][1]["path"])
    with pytest.raises(DatasetError, match=f"^{path}: has [0-9,]+ bytes, the manifest says 7$"):
        _verify(tiny_dataset)


def test_sha256_differs_only_when_asked(tiny_dataset):
    m = edit_manifest(tiny_dataset, lambda m: m["splits"]["val"]["files"][0].update(sha256="0" * 64))
    _verify(tiny_dataset)  # checksums are opt-in: sizes and counts still agree
    path = os.path.join(tiny_dataset, m["splits"]["val"]["files"][0]["path"])
    with pytest.raises(DatasetError, match=f"^{path}: sha256 differs from the manifest; the file was changed or damaged$"):
        _verify(tiny_dataset, checksums=True)


def test_changed_bytes_are_caught_by_sha256_before_the_reader(tiny_dataset):
    rel = read_manifest(tiny_dataset)["splits"]["train"]["files"][0]["path"]
    path = pathlib.Path(tiny_dataset, rel)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # the footer: the ArrayRecord reader may no longer open it
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="sha256 differs"):
        _verify(tiny_dataset, checksums=True)


def test_record_count_differs(tiny_dataset):
    m = edit_manifest(tiny_dataset, lambda m: m["splits"]["train"]["files"][0].update(records=6))
    path = os.path.join(tiny_dataset, m["splits"]["train"]["files"][0]["path"])
    with pytest.raises(DatasetError, match=f"^{path}: holds 5 records, the manifest says 6$"):
        _verify(tiny_dataset)


def test_split_total_differs(tiny_dataset):
    edit_manifest(tiny_dataset, lambda m: m["splits"]["train"].update(records=1_000))
    with pytest.raises(DatasetError, match=f"^{tiny_dataset}: split train files hold 8 records but the manifest says 1,000$"):
        _verify(tiny_dataset)
