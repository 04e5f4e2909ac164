"""Opening a dataset (trainer/data.py): the manifest's and the config's checks, the errors, no Beam."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import beam_pipelines.dataset
from beam_pipelines.common.errors import InputError, exit_code
from tests.trainer.helpers import make_config
from tokenizer import PAD
from trainer import data
from trainer.config import load_config


def _edit_manifest(root, edit) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _entries(manifest, split: str, i: int) -> list[dict]:
    """The ``i``-th file entry of ``split`` at the top level and in the version that lists it (the manifest
    stays consistent: readers of an earlier version read the versions' entries)."""
    entry = manifest["splits"][split]["files"][i]
    return [entry] + [f for v in manifest.get("versions", []) for f in v["splits"].get(split, {}).get("files", [])
                      if f["path"] == entry["path"]]


def test_opens_the_pretokenized_sample(sample_dataset):
    ds = data.open_dataset(str(sample_dataset), make_config(sample_dataset), verify_checksums=True)
    assert set(ds.split_names()) == {"train", "val", "test"}
    assert ds.seq_len == 1024 and ds.pad_id == PAD
    assert ds.num_records("train") > 1000 and len(ds.fingerprint) == 64


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["tokenizer"].update(name="v2"), "tokenizer name"),
        (lambda m: m["tokenizer"].update(version=2), "tokenizer version"),
        (lambda m: m["tokenizer"].update(vocab_size=300), "tokenizer vocab_size"),
        (lambda m: m["tokenizer"].update(pad_id=0), "tokenizer pad_id"),
        (lambda m: m.update(seq_len=512), "seq_len is 512"),
        (lambda m: m["splits"]["train"]["files"][0].update(records=1 + m["splits"]["train"]["records"]), "holds"),
        (lambda m: [e.update(path="val/missing.array_record") for e in _entries(m, "val", 0)], "missing"),
        (lambda m: m.pop("fingerprint"), "no 'fingerprint'"),
        (lambda m: m.update(format_version=2), "format_version 2, but this code reads format_version 1 only"),
        (lambda m: m["splits"]["val"]["files"][0].update(bytes=1), "has [0-9,]+ bytes, the manifest says 1"),
    ],
)
def test_manifest_disagreements_are_refused(dataset_copy, edit, message):
    _edit_manifest(dataset_copy, edit)
    with pytest.raises(data.DatasetError, match=message):
        data.open_dataset(str(dataset_copy), make_config(dataset_copy))


def test_config_disagreements_are_refused(sample_dataset):
    with pytest.raises(data.DatasetError, match="seq_len"):
        data.open_dataset(str(sample_dataset), make_config(sample_dataset, "seq_len=512"))
    with pytest.raises(data.DatasetError, match="vocab_size"):
        data.open_dataset(str(sample_dataset), make_config(sample_dataset, "model.vocab_size=300"))


def test_missing_manifest_and_bad_checksum_are_refused(dataset_copy, tmp_path):
    with pytest.raises(data.DatasetError, match="no manifest.json"):
        data.open_dataset(str(tmp_path / "nowhere"), load_config("tiny"))
    _edit_manifest(dataset_copy, lambda m: m["splits"]["test"]["files"][0].update(sha256="0" * 64))
    data.open_dataset(str(dataset_copy), make_config(dataset_copy, "verify_checksums=false"))  # turned off
    with pytest.raises(data.DatasetError, match="sha256"):
        data.open_dataset(str(dataset_copy), make_config(dataset_copy))  # on by default


def test_dataset_errors_are_the_contracts_input_errors():
    assert data.DatasetError is beam_pipelines.dataset.DatasetError
    assert issubclass(data.DatasetError, InputError) and exit_code(data.DatasetError("x")) == 2


def test_importing_the_trainer_does_not_import_beam(repo_root):
    code = (
        "import sys, trainer.data, trainer.train, trainer.eval.evaluate, trainer.eval.predict, beam_pipelines.dataset; "
        "assert 'apache_beam' not in sys.modules, sorted(m for m in sys.modules if m.startswith('apache_beam'))[:5]"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_without_a_config_any_known_scheme_opens_and_sha256_only_on_request(dataset_copy):
    """Evaluation's open (--baselines_only, tune): no config to compare with; the same files as training's."""
    config = make_config(dataset_copy)
    ds = data.open_dataset(str(dataset_copy))
    assert ds.version == ds.latest_version == 1 and ds.pad_id == PAD and ds.seq_len == 1024
    assert ds.manifest == data.open_dataset(str(dataset_copy), config).manifest
    with pytest.raises(data.DatasetError, match="no version 2; it has version 1"):
        data.open_dataset(str(dataset_copy), version=2)
    with pytest.raises(data.DatasetError, match="no version 2; it has version 1"):
        data.open_dataset(str(dataset_copy), config, version=2)  # the version given wins over the config's
    _edit_manifest(dataset_copy, lambda m: [e.update(sha256="0" * 64) for e in _entries(m, "test", 0)])
    data.open_dataset(str(dataset_copy))  # sizes and record counts only
    with pytest.raises(data.DatasetError, match="sha256"):
        data.open_dataset(str(dataset_copy), verify_checksums=True)
    _edit_manifest(dataset_copy, lambda m: m["tokenizer"].update(name="v9"))
    with pytest.raises(data.DatasetError, match="unknown tokenizer scheme 'v9'.*; this evaluation decodes no such"):
        data.open_dataset(str(dataset_copy))
