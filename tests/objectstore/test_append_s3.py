"""``pretokenize --append`` onto a dataset in S3 (moto's server): the same bytes as the local append, the
leftovers of an interrupted append removed, a re-append a no-op; ``stats --dataset --version 1`` of it
stages and reads version 1's files only."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.pretokenize import pipeline as pretokenize
from beam_pipelines.stats import pipeline as stats
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY
from tests.objectstore.helpers import download_tree, file_bytes, make_raw


@pytest.mark.slow
def test_append_on_s3_matches_the_local_append(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1796032800")  # the manifests' created, so they compare as bytes
    first, _ = make_raw(tmp_path / "raw", rows=3000, shards=2)
    pattern = str(tmp_path / "raw" / "*.parquet")
    local = tmp_path / "local"
    assert pretokenize.run(["--input", first, "--output", str(local), IN_MEMORY]) == 0
    v1_records = {s: v["records"] for s, v in json.loads((local / "manifest.json").read_text())["splits"].items()}
    assert pretokenize.run(["--input", pattern, "--output", str(local), "--append", IN_MEMORY]) == 0

    bucket = s3.new_bucket()
    url = f"s3://{bucket}/ds"
    assert pretokenize.run(["--input", first, "--output", url, IN_MEMORY, *s3.beam_args]) == 0
    v1_manifest = s3.get(bucket, "ds/manifest.json")
    # What an append killed after renaming its files leaves: an object the manifest does not list.
    leftover = "ds/train/train-v00002-00000-of-00001.array_record"
    s3.client.put_object(Bucket=bucket, Key=leftover, Body=b"half of an append")
    capsys.readouterr()
    # --in_process (as the hourly update appends): the stages in this process without Beam
    # (pretokenize/local.py), against the store through common.storage; the local reference ran the pipeline.
    assert pretokenize.run(["--input", pattern, "--output", url, "--append", "--in_process", *s3.beam_args]) == 0
    err = capsys.readouterr().err
    assert "note: removed 1 file(s) left by an interrupted run" in err and "without Beam (--in_process)" in err
    download_tree(s3, bucket, "ds", tmp_path / "from-s3")
    assert file_bytes(tmp_path / "from-s3") == file_bytes(local)  # records, rejected rows and manifest
    assert s3.get(bucket, "ds/manifest.json") != v1_manifest

    manifest = s3.get(bucket, "ds/manifest.json")
    assert pretokenize.run(["--input", pattern, "--output", url, "--append", IN_MEMORY, *s3.beam_args]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert s3.get(bucket, "ds/manifest.json") == manifest
    assert not [k for k in s3.keys(bucket, "ds/") if "_tmp" in k or "_writer.lock" in k]

    # stats of version 1 of the dataset on s3: staged up to version 1 only, its records only.
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PING_LLM_CACHE_DIR", str(cache))
    assert stats.run(["--dataset", url, "--version", "1", "--output", str(tmp_path / "report"), "--no_html"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["version"] == 1 and report["checks"]["manifest_agrees"]
    assert {s: v["records"] for s, v in report["splits"].items()} == v1_records
    staged = [p.name for p in cache.rglob("*.array_record")]
    assert staged and not [n for n in staged if "-v00002-" in n]
