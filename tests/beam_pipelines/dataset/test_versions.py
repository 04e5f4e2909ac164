"""A dataset's versions: dataset_versions, select_version, version_fingerprint, created_now, and what
read_manifest refuses in a ``versions`` list (docs/data-contract.md#versions)."""

from __future__ import annotations

import copy
import hashlib
import json
import os

import pytest

from beam_pipelines.common.errors import InputError
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import ManifestError, dataset_versions, read_manifest, select_version
from beam_pipelines.dataset.verify import verify_dataset
from tests.beam_pipelines.dataset.helpers import append_tiny_version, edit_manifest

# The keys a reader relies on (docs/data-contract.md): what a run bound to a version must see unchanged.
_READER_KEYS = ("format_version", "tokenizer", "seq_len", "fingerprint")


def _reader_view(m: dict) -> dict:
    view = {k: m[k] for k in _READER_KEYS}
    view["splits"] = {n: (s["records"], s["files"]) for n, s in m["splits"].items()}
    return view


@pytest.fixture
def two_versions(tiny_dataset):
    v1 = read_manifest(tiny_dataset)
    v2 = append_tiny_version(tiny_dataset, copy.deepcopy(v1))
    return tiny_dataset, v1, v2


def test_a_manifest_without_versions_is_version_1(tiny_dataset):
    m = read_manifest(tiny_dataset)
    assert "versions" not in m
    (only,) = dataset_versions(m)
    assert only["version"] == 1 and only["created"] is None
    assert only["fingerprint"] == m["fingerprint"] and only["splits"] == m["splits"]
    selected = select_version(m, None)
    assert selected["version"] == 1 and len(selected["versions"]) == 1
    assert _reader_view(selected) == _reader_view(m)
    assert _reader_view(select_version(m, 1)) == _reader_view(m)


def test_after_an_append_version_1_reads_as_before(two_versions):
    root, v1, v2 = two_versions
    on_disk = read_manifest(root)  # the two-version manifest passes validation
    assert on_disk == v2 and on_disk["version"] == 2
    assert _reader_view(select_version(on_disk, 1, root=root)) == _reader_view(v1)
    assert select_version(on_disk, 1)["versions"] == dataset_versions(on_disk)[:1]
    verify_dataset(root, select_version(on_disk, 1), checksums=True)
    verify_dataset(root, on_disk, checksums=True)


def test_the_latest_version_is_the_manifest_itself(two_versions):
    _, v1, v2 = two_versions
    assert select_version(v2) == v2
    assert select_version(v2, 2) == v2
    # Files of every version, version 1's first; counts summed.
    train = v2["splits"]["train"]
    assert [f["path"] for f in train["files"]] == [
        "train/train-00000-of-00002.array_record",
        "train/train-00001-of-00002.array_record",
        "train/train-v00002-00000-of-00001.array_record",
    ]
    assert train["records"] == 5 + 3 + 4
    assert v2["splits"]["val"]["records"] == 2 and v2["splits"]["test"]["records"] == 1
    assert v2["fingerprint"] == dataset_versions(v2)[1]["fingerprint"] != v1["fingerprint"]
    assert v2["inputs"] == [{"path": "new.parquet", "sha256": "cd" * 32, "bytes": 7, "rows": 5}]


@pytest.mark.parametrize("version, shown", [(0, "0"), (3, "3"), (-1, "-1"), ("1", "'1'"), (True, "True")])
def test_an_unknown_version_is_refused_naming_the_dataset_and_the_versions(two_versions, version, shown):
    root, _, v2 = two_versions
    with pytest.raises(ManifestError) as info:
        select_version(v2, version, root=root)
    assert str(info.value) == f"{root}: no version {shown}; it has versions 1..2"
    assert isinstance(info.value, InputError)  # a CLI exits 2


def test_an_unknown_version_of_a_one_version_dataset(tiny_dataset):
    with pytest.raises(ManifestError, match=r": no version 2; it has version 1$"):
        select_version(read_manifest(tiny_dataset), 2, root=tiny_dataset)


def test_totals_combine_rows_rejected_and_continuity_exactly():
    def version(n, measurements, continuity, rejected):
        return {
            "version": n,
            "fingerprint": f"{n}" * 64,
            "inputs": [{"path": f"{n}.parquet", "sha256": "ab" * 32, "bytes": 1, "rows": 9}],
            "options": {"seq_len": 8, "num_buckets": n},
            "rows": {"read": 9, "accepted": measurements, "rejected": 9 - measurements},
            "rejected": {"total": 9 - measurements, "by_reason": rejected, "files": [f"rejected/v{n}.parquet"]},
            "splits": {
                "train": {
                    "records": 1,
                    "measurements": measurements,
                    "tokens": 45 * measurements,
                    "pad_tokens": 1,
                    "sources": 2,
                    "context_continuity": continuity,
                    "files": [],
                }
            },
        }

    # 7 of 9 and 2 of 7 continued measurements: together 9 of 16, exactly (not a mean of the two shares).
    versions = [version(1, 9, 7 / 9, {"a": 0}), version(2, 7, 2 / 7, {"a": 1, "b": 1})]
    m = manifest_lib.combine_versions({"format_version": 1, "seq_len": 8}, versions)
    train = m["splits"]["train"]
    assert train["context_continuity"] == 9 / 16
    assert (train["records"], train["measurements"], train["tokens"], train["sources"]) == (2, 16, 720, 4)
    assert m["rows"] == {"read": 18, "accepted": 16, "rejected": 2}
    assert m["rejected"] == {
        "total": 2,
        "by_reason": {"a": 1, "b": 1},
        "files": ["rejected/v1.parquet", "rejected/v2.parquet"],
    }
    assert m["options"] == {"seq_len": 8, "num_buckets": 1}  # version 1's
    assert [i["path"] for i in m["inputs"]] == ["1.parquet", "2.parquet"]
    assert m["fingerprint"] == "2" * 64 and m["version"] == 2


def test_version_fingerprint_is_a_chain_over_content_options_and_tokenizer():
    inputs = [{"path": "a/part-1.parquet", "sha256": "ef" * 32, "bytes": 11, "rows": 4}]
    options = {"seq_len": 1024, "split_by": "src", "num_buckets": 1}
    previous = "12" * 32
    fp = manifest_lib.version_fingerprint(previous, inputs, options)
    # Recomputed here from the documented payload (docs/data-contract.md#the-fingerprint).
    payload = {
        "previous": previous,
        "inputs": [{"sha256": "ef" * 32, "bytes": 11, "rows": 4}],
        "options": options,
        "tokenizer": {"name": "v1", "version": 1, "vocab_size": 267, "pad_id": 266},
        "format_version": 1,
    }
    assert fp == hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert fp == manifest_lib.version_fingerprint(previous, [{**inputs[0], "path": "elsewhere"}], options)
    assert fp != manifest_lib.version_fingerprint("34" * 32, inputs, options)
    assert fp != manifest_lib.version_fingerprint(previous, [{**inputs[0], "rows": 5}], options)
    assert fp != manifest_lib.version_fingerprint(previous, inputs, {**options, "num_buckets": 2})
    assert fp != manifest_lib.fingerprint(inputs, options)


def test_created_honours_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1796032800")
    assert manifest_lib.created_now() == "2026-11-30T10:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InputError, match="SOURCE_DATE_EPOCH='yesterday': not a number"):
        manifest_lib.created_now()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    now = manifest_lib.created_now()
    assert len(now) == 20 and now.endswith("Z") and now[:2] == "20"


def _v(m, i=1):
    return m["versions"][i]


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda m: m.update(versions={}), "'versions' is not a non-empty list"),
        (lambda m: m.update(versions=[]), "'versions' is not a non-empty list"),
        (lambda m: m["versions"].append("x"), r"versions\[2\] is not an object"),
        (lambda m: _v(m).update(version=3), r"versions\[1\].version is not 2 \(versions are numbered 1..N"),
        (lambda m: _v(m, 0).update(version=True), r"versions\[0\].version is not 1"),
        (lambda m: _v(m).pop("fingerprint"), r"versions\[1\].fingerprint is not a string"),
        (lambda m: _v(m).pop("splits"), r"versions\[1\].splits is not present"),
        (
            lambda m: _v(m)["splits"]["train"]["files"][0].update(sha256="x"),
            r"versions\[1\].splits.train.files\[0\].sha256 is not a sha256",
        ),
        (lambda m: _v(m)["splits"].update(val=3), r"versions\[1\].splits.val is not an object"),
        (lambda m: m.update(version=1), "'version' is not the last version's number \\(2\\)"),
        (lambda m: m.pop("version"), "'version' is not the last version's number \\(2\\)"),
        (lambda m: m.update(fingerprint="0" * 64), "'fingerprint' is not the last version's fingerprint"),
        (
            lambda m: m["splits"]["train"]["files"].pop(),
            "splits.train.files is not the versions' files in version order",
        ),
        (
            lambda m: m["splits"]["train"]["files"].reverse(),
            "splits.train.files is not the versions' files in version order",
        ),
    ],
)
def test_malformed_versions_are_refused_naming_the_key(two_versions, edit, where):
    root = two_versions[0]
    edit_manifest(root, edit)
    with pytest.raises(ManifestError, match=where) as info:
        read_manifest(root)
    assert str(info.value).startswith(os.path.join(root, "manifest.json"))
