"""read_manifest: the one reader of manifest.json, and what it refuses (each refusal names the path)."""

from __future__ import annotations

import json
import os

import pytest

from beam_pipelines.common.errors import InputError, exit_code
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import DatasetError, ManifestError, read_manifest
from tests.beam_pipelines.dataset.helpers import SEQ_LEN, edit_manifest


def test_reads_a_dataset_manifest(tiny_dataset):
    manifest = read_manifest(tiny_dataset)
    assert manifest["format_version"] == 1 and manifest["seq_len"] == SEQ_LEN
    assert manifest["tokenizer"] == manifest_lib.tokenizer_info()
    assert set(manifest["splits"]) == {"train", "val", "test"}
    assert manifest["splits"]["train"]["records"] == 8


def test_errors_are_input_errors_so_clis_exit_2():
    assert issubclass(ManifestError, DatasetError) and issubclass(DatasetError, InputError)
    assert exit_code(ManifestError("x")) == 2


def test_no_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json; the dataset is missing or incomplete") as info:
        read_manifest(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(info.value)


@pytest.mark.parametrize("text, message", [("{not json", "not a readable JSON manifest"), ("[1, 2]", "not a JSON object")])
def test_unreadable_manifest(tiny_dataset, text, message):
    path = os.path.join(tiny_dataset, "manifest.json")
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(tiny_dataset)
    assert str(info.value).startswith(path)


def test_an_ingest_atlas_output_is_recognised(tmp_path):
    # The real writer's manifest: the same file name and format_version 1, another format.
    from beam_pipelines.ingest_atlas.shards import MANIFEST_NAME, build_manifest

    assert MANIFEST_NAME == manifest_lib.MANIFEST_NAME
    manifest = build_manifest([], [], [], {"shard_rows": 10})
    assert manifest["format_version"] == manifest_lib.FORMAT_VERSION
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="this is an ingest_atlas output, not a pretokenized dataset; run pretokenize"):
        read_manifest(str(tmp_path))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format_version=2), "format_version 2, but this code reads format_version 1 only"),
        (lambda m: m.update(format_version="1"), "no integer 'format_version'"),
        (lambda m: m.update(format_version=True), "no integer 'format_version'"),
        (lambda m: m.pop("format_version"), "no integer 'format_version'"),
    ],
)
def test_format_version_other_than_1_is_refused(tiny_dataset, edit, message):
    edit_manifest(tiny_dataset, edit)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tiny_dataset)


@pytest.mark.parametrize("key", ["tokenizer", "seq_len", "splits", "fingerprint"])
def test_required_keys(tiny_dataset, key):
    edit_manifest(tiny_dataset, lambda m: m.pop(key))
    with pytest.raises(ManifestError, match=f"manifest has no '{key}'"):
        read_manifest(tiny_dataset)


def _train_file(m):
    return m["splits"]["train"]["files"][0]


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda m: m.update(tokenizer="v1"), "'tokenizer' is not an object"),
        (lambda m: m["tokenizer"].update(name=1), "tokenizer.name is not a string"),
        (lambda m: m["tokenizer"].pop("pad_id"), "tokenizer.pad_id is not an integer"),
        (lambda m: m.update(seq_len=0), "seq_len is not a positive integer"),
        (lambda m: m.update(seq_len="8"), "seq_len is not a positive integer"),
        (lambda m: m.update(fingerprint=None), "'fingerprint' is not a string"),
        (lambda m: m.update(splits=[]), "'splits' is not an object"),
        (lambda m: m["splits"].update(val=[]), "splits.val is not an object"),
        (lambda m: m["splits"]["val"].pop("records"), "splits.val.records is not a count"),
        (lambda m: m["splits"]["val"].update(files={}), "splits.val.files is not a list"),
        (lambda m: m["splits"]["train"]["files"].append("x"), r"splits.train.files\[2\] is not an object"),
        (lambda m: _train_file(m).update(path="/etc/passwd"), r"files\[0\].path is not a relative path inside"),
        (lambda m: _train_file(m).update(path="../x.array_record"), r"files\[0\].path is not a relative path"),
        (lambda m: _train_file(m).update(records=-1), r"files\[0\].records is not a count"),
        (lambda m: _train_file(m).pop("bytes"), r"files\[0\].bytes is not a count"),
        (lambda m: _train_file(m).update(sha256="abc"), r"files\[0\].sha256 is not a sha256 hex digest"),
    ],
)
def test_malformed_manifest_names_the_key(tiny_dataset, edit, where):
    edit_manifest(tiny_dataset, edit)
    with pytest.raises(ManifestError, match=where) as info:
        read_manifest(tiny_dataset)
    assert str(info.value).startswith(os.path.join(tiny_dataset, "manifest.json"))


def test_fingerprint_covers_content_options_tokenizer_not_paths():
    inputs = [{"path": "a/part-0.parquet", "sha256": "ab" * 32, "bytes": 10, "rows": 3}]
    options = {"seq_len": 1024, "split_by": "src"}
    fp = manifest_lib.fingerprint(inputs, options)
    # Pinned: datasets already written carry this value, and trainers compare it on resume.
    assert fp == "135311d18dab050d50cbb3bb4769e06da786aabed5ac4b3a84e135f7f8b6009e"
    assert fp == manifest_lib.fingerprint([{**inputs[0], "path": "elsewhere.parquet"}], options)
    assert fp != manifest_lib.fingerprint([{**inputs[0], "rows": 4}], options)
    assert fp != manifest_lib.fingerprint(inputs, {**options, "seq_len": 512})
