"""``stats --input`` and ``stats --dataset`` with inputs and reports in S3 (moto's server, see conftest)."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.stats import pipeline as stats
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY
from tests.objectstore.helpers import make_raw, upload_tree


@pytest.mark.slow
def test_stats_input_and_dataset_from_and_to_s3(s3, sample_dataset, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    make_raw(raw, rows=3000, shards=2)
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "raw", raw)
    upload_tree(s3, bucket, "ds", sample_dataset)

    # --input: Beam's S3 options; the report equals the local job's but for where the inputs were.
    assert stats.run(["--input", str(raw / "*.parquet"), "--output", str(tmp_path / "local"), "--no_html", IN_MEMORY]) == 0
    argv = ["--input", f"s3://{bucket}/raw/*.parquet", "--output", f"s3://{bucket}/report", "--no_html", IN_MEMORY, *s3.beam_args]
    assert stats.run(argv) == 0
    assert s3.keys(bucket, "report/") == ["report/report.json", "report/report.md"]  # no scratch, no lock
    remote = json.loads(s3.get(bucket, "report/report.json"))
    local = json.loads((tmp_path / "local" / "report.json").read_text())
    assert [f["path"] for f in remote["input"]["files"]] == [f"s3://{bucket}/raw/{p.name}" for p in sorted(raw.iterdir())]
    for report in (remote, local):
        report["input"] = {**report["input"], "pattern": None, "files": [{**f, "path": None} for f in report["input"]["files"]]}
    assert remote == local and remote["rows"] == 3000

    # --dataset: configured by the AWS environment (no Beam options apply); staged, verified, reported.
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    assert stats.run(["--dataset", str(sample_dataset), "--output", str(tmp_path / "local-ds"), "--no_html"]) == 0
    assert stats.run(["--dataset", f"s3://{bucket}/ds", "--output", f"s3://{bucket}/ds-report", "--no_html"]) == 0
    remote = json.loads(s3.get(bucket, "ds-report/report.json"))
    local = json.loads((tmp_path / "local-ds" / "report.json").read_text())
    assert remote.pop("dataset") == f"s3://{bucket}/ds" and local.pop("dataset") == str(sample_dataset)
    assert remote == local and remote["checks"]["manifest_agrees"]
    assert s3.keys(bucket, "ds-report/") == ["ds-report/report.json", "ds-report/report.md"]
