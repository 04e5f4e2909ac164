"""A remote ``data_dir``: staged into ``cache_dir`` (verified against the manifest), reused by the next run."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest

from beam_pipelines.common.errors import InputError
from beam_pipelines.dataset import DatasetError, select_version
from beam_pipelines.dataset.staging import STAGED_MARKER, stage_dataset
from tests.objectstore.helpers import file_bytes, upload_tree
from tests.trainer.helpers import MINI, make_config
from trainer import data, metrics_log, train
from trainer.eval import evaluate

RUN = [*MINI, "steps=6", "batch_size=4", "warmup_steps=2", "log_every=1", "checkpoint_every=6", "eval_every=6",
       "eval_batches=1", "num_workers=0"]


@pytest.fixture
def remote_sample(s3, sample_dataset, monkeypatch):
    """The session's pretokenized sample, uploaded (boto3) to a fresh bucket; the AWS environment points at
    the server (the trainer is configured the standard way, by the environment)."""
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "ds", sample_dataset)
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    return bucket


@pytest.mark.slow
def test_training_on_s3_stages_once_and_reuses_the_cache(s3, remote_sample, sample_dataset, tmp_path, capsys):
    bucket, cache = remote_sample, tmp_path / "cache"
    url = f"s3://{bucket}/ds"
    first = train.train_and_evaluate(make_config(url, *RUN, f"cache_dir={cache}"), str(tmp_path / "w1"))
    assert first["step"] == 6
    fingerprint = json.loads((sample_dataset / "manifest.json").read_text())["fingerprint"]
    staged = cache / "datasets" / fingerprint
    assert (staged / STAGED_MARKER).is_file()
    local = {k: v for k, v in file_bytes(sample_dataset).items() if not k.startswith("rejected")}
    assert {k: v for k, v in file_bytes(staged).items() if k != STAGED_MARKER} == local  # a byte-exact copy
    assert "copying" in capsys.readouterr().err

    # The data files leave the store (the manifest stays): the second run must not need them.
    for key in s3.keys(bucket, "ds/"):
        if key.endswith(".array_record"):
            s3.client.delete_object(Bucket=bucket, Key=key)
    second = train.train_and_evaluate(make_config(url, *RUN, f"cache_dir={cache}"), str(tmp_path / "w2"))
    assert "using the verified local copy" in capsys.readouterr().err
    losses = [(r["step"], r["loss"]) for r in metrics_log.read_metrics(str(tmp_path / "w1"))]
    assert losses == [(r["step"], r["loss"]) for r in metrics_log.read_metrics(str(tmp_path / "w2"))]
    assert second["step"] == 6


@pytest.mark.slow  # the session's pretokenized sample
def test_a_damaged_remote_file_is_refused_and_nothing_is_cached(s3, remote_sample, sample_dataset, tmp_path):
    bucket = remote_sample
    manifest = json.loads((sample_dataset / "manifest.json").read_text())
    rel = manifest["splits"]["val"]["files"][0]["path"]
    data = bytearray((sample_dataset / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    s3.client.put_object(Bucket=bucket, Key=f"ds/{rel}", Body=bytes(data))
    with pytest.raises(DatasetError, match=f"s3://{bucket}/ds/{rel}: sha256 differs"):
        stage_dataset(f"s3://{bucket}/ds", str(tmp_path / "cache"), quiet=True)
    assert not os.path.exists(tmp_path / "cache" / "datasets" / manifest["fingerprint"])
    assert os.listdir(tmp_path / "cache" / "datasets") == []  # the partial copy is gone too


def test_a_missing_bucket_or_manifest_is_bad_input(s3, monkeypatch, tmp_path):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    bucket = s3.new_bucket()
    with pytest.raises(InputError, match="s3://no-such-bucket/ds: bucket 'no-such-bucket' does not exist"):
        stage_dataset("s3://no-such-bucket/ds", str(tmp_path))
    with pytest.raises(DatasetError, match=f"s3://{bucket}/nothing: no manifest.json"):
        stage_dataset(f"s3://{bucket}/nothing", str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # the session's pretokenized sample and a full baselines fit
def test_baselines_only_evaluation_reads_a_remote_dataset(s3, remote_sample, sample_dataset, tmp_path):
    """``trainer.evaluate --baselines_only`` has no model config; it stages the remote dataset all the same
    and scores exactly what a run on the local copy scores."""
    args = ["--baselines_only", "--split", "test", "--no-progress"]
    assert evaluate.run([*args, "--data_dir", f"s3://{remote_sample}/ds", "--output", str(tmp_path / "s3")]) == 0
    assert evaluate.run([*args, "--data_dir", str(sample_dataset), "--output", str(tmp_path / "local")]) == 0
    remote, local = file_bytes(tmp_path / "s3"), file_bytes(tmp_path / "local")
    assert "predictions.csv" in local
    assert remote["predictions.csv"] == local["predictions.csv"]


@pytest.mark.slow  # the session's pretokenized sample and an append
def test_a_version_is_staged_alone_keyed_by_its_fingerprint(s3, sample_dir, sample_dataset, tmp_path, monkeypatch):
    """A dataset with two versions: version 1 is staged with its own files only, in a folder named by its
    fingerprint, with its manifest (select_version); the latest in another folder, with the store's manifest."""
    from tests.trainer.helpers import append_later_rows

    local = tmp_path / "ds"
    shutil.copytree(sample_dataset, local)
    append_later_rows(sample_dir, local, tmp_path / "new", rows=500)
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["version"] == 2
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "ds", local)
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    url, cache = f"s3://{bucket}/ds", tmp_path / "cache"

    v1 = select_version(manifest, 1)
    staged = pathlib.Path(stage_dataset(url, str(cache), quiet=True, version=1))
    assert staged == cache / "datasets" / v1["fingerprint"]
    listed = {f["path"] for split in v1["splits"].values() for f in split["files"]}
    got = {k: v for k, v in file_bytes(staged).items() if k not in (STAGED_MARKER, "manifest.json")}
    assert got == {k: v for k, v in file_bytes(local).items() if k in listed}  # version 1's files, nothing after
    assert json.loads((staged / "manifest.json").read_text()) == v1
    dataset = data.open_dataset(url, make_config(url, "data_version=1", f"cache_dir={cache}"))
    assert (dataset.root, dataset.version, dataset.fingerprint) == (str(staged), 1, v1["fingerprint"])

    latest = pathlib.Path(stage_dataset(url, str(cache), quiet=True))
    assert latest == cache / "datasets" / manifest["fingerprint"]
    assert (latest / "manifest.json").read_bytes() == (local / "manifest.json").read_bytes()
    assert sorted(os.listdir(cache / "datasets")) == sorted([v1["fingerprint"], manifest["fingerprint"]])
    with pytest.raises(DatasetError, match=f"{url}: no version 3; it has versions 1..2"):
        stage_dataset(url, str(cache), quiet=True, version=3)
