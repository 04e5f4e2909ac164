"""``pretokenize`` with inputs, output and scratch in S3 (a real S3 API: moto's server, see conftest)."""

from __future__ import annotations

import collections
import json
import os

import pyarrow.parquet as pq
import pytest

from beam_pipelines.pretokenize import pipeline as pretokenize
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY, canonical, decoded_records, input_rows, row_key
from tests.objectstore.helpers import BAD_ROWS, all_records, download_tree, make_raw, records_bytes, upload_tree


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    return folder, make_raw(folder)


@pytest.fixture(scope="module")
def local_run(raw, tmp_path_factory):
    """The same job local -> local: the reference the S3 runs must match byte for byte."""
    folder, _ = raw
    out = tmp_path_factory.mktemp("local") / "ds"
    assert pretokenize.run(["--input", str(folder / "*.parquet"), "--output", str(out), IN_MEMORY]) == 0
    return out


@pytest.mark.slow
def test_s3_to_s3_decodes_to_the_valid_rows_and_matches_the_local_job(s3, raw, local_run, tmp_path, capsys):
    folder, paths = raw
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "raw", folder)
    s3.client.put_object(Bucket=bucket, Key="raw/README.txt", Body=b"not parquet, not matched by the glob")

    # Multi-process workers (the default runner): they get the S3 options through the pipeline options.
    argv = ["--input", f"s3://{bucket}/raw/*.parquet", "--output", f"s3://{bucket}/ds", "--direct_num_workers=2", *s3.beam_args]
    assert pretokenize.run(argv) == 0
    capsys.readouterr()

    keys = s3.keys(bucket, "ds/")
    manifest = json.loads(s3.get(bucket, "ds/manifest.json"))
    listed = {f"ds/{f['path']}" for s in manifest["splits"].values() for f in s["files"]}
    rejected = {f"ds/{p}" for p in manifest["rejected"]["files"]}
    # Exactly the dataset: no scratch (_tmp), no writer lock, nothing else.
    assert set(keys) == listed | rejected | {"ds/manifest.json"}

    got = download_tree(s3, bucket, "ds", tmp_path / "ds")
    assert "manifest.json" in got
    # Byte-identical records and the same fingerprint as the local job.
    local_manifest = json.loads((local_run / "manifest.json").read_text())
    assert records_bytes(tmp_path / "ds") == records_bytes(local_run)
    assert manifest["fingerprint"] == local_manifest["fingerprint"]
    assert manifest["splits"] == local_manifest["splits"]
    assert [i["path"] for i in manifest["inputs"]] == [f"s3://{bucket}/raw/{os.path.basename(p)}" for p in paths]

    # The records decode to exactly the input's valid rows (independent reader, multiset equality); the
    # rows rejected (the generator's invalid rows and BAD_ROWS) are kept in rejected/ with their origin.
    rows = input_rows(paths)
    rej = pq.read_table(tmp_path / "ds" / "rejected").to_pylist()
    first = f"s3://{bucket}/raw/{os.path.basename(paths[0])}"
    assert {r["source_file"] for r in rej} <= {f"s3://{bucket}/raw/{os.path.basename(p)}" for p in paths}
    assert {(first, i) for i in BAD_ROWS} <= {(r["source_file"], r["source_row"]) for r in rej}
    by_url = {f"s3://{bucket}/raw/{os.path.basename(p)}": str(p) for p in paths}
    rejected_at = {(by_url[r["source_file"]], r["source_row"]) for r in rej}
    kept = [
        row_key(dict(r, src_addr=canonical(r["src_addr"]), dst_addr=canonical(r["dst_addr"])))
        for r in rows
        if (r["source_file"], r["source_row"]) not in rejected_at
    ]
    assert len(kept) + len(rej) == len(rows) == manifest["rows"]["read"]
    decoded = [row_key(m) for rec in decoded_records(all_records(tmp_path / "ds", manifest)) for m in rec]
    assert collections.Counter(decoded) == collections.Counter(kept)


@pytest.mark.slow
def test_environment_credentials_temp_location_and_rerun(s3, raw, local_run, monkeypatch, tmp_path, capsys):
    """Configured by the standard AWS environment only; scratch under --temp_location, gone at the end;
    a second run finds the same dataset and does nothing."""
    folder, _ = raw
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "raw", folder)
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    argv = ["--input", f"s3://{bucket}/raw", "--output", f"s3://{bucket}/out/ds", f"--temp_location=s3://{bucket}/scratch", IN_MEMORY]
    assert pretokenize.run(argv) == 0
    assert s3.keys(bucket, "scratch/") == []
    assert not [k for k in s3.keys(bucket, "out/ds/") if "_tmp" in k or "_writer.lock" in k]
    download_tree(s3, bucket, "out/ds", tmp_path / "ds")
    assert records_bytes(tmp_path / "ds") == records_bytes(local_run)
    capsys.readouterr()
    before = {k: s3.client.head_object(Bucket=bucket, Key=k)["ETag"] for k in s3.keys(bucket, "out/")}
    assert pretokenize.run(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    after = {k: s3.client.head_object(Bucket=bucket, Key=k)["ETag"] for k in s3.keys(bucket, "out/")}
    assert after == before


@pytest.mark.slow
def test_an_upload_failing_mid_job_leaves_no_manifest_and_a_rerun_succeeds(s3, raw, local_run, tmp_path, capsys):
    """The store refuses the workers' uploads of the val split's ArrayRecord files (moto's IAM: an explicit
    deny), after the bucket files and maybe other splits went up: the job fails (exit 1) and leaves no
    manifest, no scratch and no lock; the same job with working credentials then writes the dataset."""
    folder, _ = raw
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "raw", folder)
    flaky = s3.user_keys(
        "flaky-writer",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/ds/_tmp/records/val/*"},
            ],
        },
    )
    base = ["--input", f"s3://{bucket}/raw/*.parquet", "--output", f"s3://{bucket}/ds", IN_MEMORY]
    s3.enforce_iam(True)
    try:
        flaky_args = [f"--s3_endpoint_url={s3.endpoint}", f"--s3_access_key_id={flaky[0]}",
                      f"--s3_secret_access_key={flaky[1]}", "--s3_region_name=us-east-1"]
        assert pretokenize.run([*base, *flaky_args]) == 1
    finally:
        s3.enforce_iam(False)
    err = capsys.readouterr().err
    assert "pretokenize failed" in err and "no manifest was written" in err
    assert s3.keys(bucket, "ds/") == []  # no manifest, no records under final names, no scratch, no lock

    assert pretokenize.run([*base, *s3.beam_args]) == 0
    download_tree(s3, bucket, "ds", tmp_path / "ds")
    assert records_bytes(tmp_path / "ds") == records_bytes(local_run)


@pytest.mark.slow
def test_dask_workers_with_their_own_temp_dirs_match_the_direct_runner(s3, raw, local_run, tmp_path):
    """A Dask cluster whose two worker processes have different local temporary directories and no AWS
    environment: the S3 options given on the command line reach them through the job; the dataset on
    s3 is byte-identical to the DirectRunner's."""
    distributed = pytest.importorskip("distributed")  # the 'dask' extra; installed by the 'test' extra
    folder, _ = raw
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "raw", folder)
    tmpdirs = [tmp_path / "tmp-a", tmp_path / "tmp-b"]
    for d in tmpdirs:
        d.mkdir()
    workers = {
        f"w{i}": {"cls": distributed.Nanny, "options": {"nthreads": 1, "env": {"TMPDIR": str(d)}}}
        for i, d in enumerate(tmpdirs)
    }
    scheduler = {"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    with distributed.SpecCluster(workers=workers, scheduler=scheduler) as cluster:
        with distributed.Client(cluster) as client:
            seen = client.run(lambda: __import__("tempfile").gettempdir())
        assert sorted(seen.values()) == sorted(str(d) for d in tmpdirs)
        argv = ["--input", f"s3://{bucket}/raw/*.parquet", "--output", f"s3://{bucket}/ds", "--runner=DaskRunner",
                f"--dask_client_address={cluster.scheduler_address}", *s3.beam_args]
        assert pretokenize.run(argv) == 0
    download_tree(s3, bucket, "ds", tmp_path / "ds")
    assert records_bytes(tmp_path / "ds") == records_bytes(local_run)
    assert not [k for k in s3.keys(bucket, "ds/") if "_tmp" in k or "_writer.lock" in k]
    assert not [p for d in tmpdirs for p in d.iterdir() if p.name.startswith("ping-llm-")]  # local copies gone
