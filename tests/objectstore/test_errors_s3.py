"""Clear errors for the common object-store mistakes: one ``error:`` line naming the URL, exit 2, and nothing
written. A real S3 API (moto's server); access denied is moto's IAM enforcement with users of its IAM."""

from __future__ import annotations

import pytest

from beam_pipelines.pretokenize import pipeline as pretokenize
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY
from tests.objectstore.helpers import make_raw, upload_tree


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw-small")
    make_raw(folder, rows=300, shards=1)
    return folder


@pytest.fixture
def bucket_with_raw(s3, small_raw):
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "raw", small_raw)
    return bucket


def _refused(capsys, argv) -> str:
    """Run pretokenize; it must exit 2 with exactly one ``error:`` line on stderr, which is returned."""
    assert pretokenize.run([*argv, IN_MEMORY]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_output_bucket_that_does_not_exist(s3, bucket_with_raw, capsys):
    line = _refused(capsys, ["--input", f"s3://{bucket_with_raw}/raw", "--output", "s3://no-such-bucket/ds", *s3.beam_args])
    assert "s3://no-such-bucket/ds" in line and "does not exist" in line
    assert s3.keys(bucket_with_raw) == ["raw/part-00000-of-00001.parquet"]


def test_input_bucket_that_does_not_exist(s3, capsys):
    out = s3.new_bucket()
    line = _refused(capsys, ["--input", "s3://no-such-bucket/raw/*.parquet", "--output", f"s3://{out}/ds", *s3.beam_args])
    assert "s3://no-such-bucket/raw/*.parquet" in line and "does not exist" in line
    assert s3.keys(out) == []  # the writer lock it took is gone again


def test_glob_matching_nothing(s3, bucket_with_raw, capsys):
    line = _refused(capsys, ["--input", f"s3://{bucket_with_raw}/raw/*.parq", "--output", f"s3://{bucket_with_raw}/ds", *s3.beam_args])
    assert f"s3://{bucket_with_raw}/raw/*.parq" in line and "matches no file" in line
    assert s3.keys(bucket_with_raw) == ["raw/part-00000-of-00001.parquet"]


def test_no_credentials(s3, bucket_with_raw, capsys):
    # The fixture cleared the AWS environment and points the credential files nowhere; only the endpoint.
    line = _refused(
        capsys,
        ["--input", f"s3://{bucket_with_raw}/raw", "--output", f"s3://{bucket_with_raw}/ds", f"--s3_endpoint_url={s3.endpoint}"],
    )
    assert f"s3://{bucket_with_raw}/ds" in line and "no credentials" in line
    assert s3.keys(bucket_with_raw) == ["raw/part-00000-of-00001.parquet"]


def _keys_args(s3, key_id, secret):
    return [f"--s3_endpoint_url={s3.endpoint}", f"--s3_access_key_id={key_id}", f"--s3_secret_access_key={secret}", "--s3_region_name=us-east-1"]


@pytest.mark.slow  # two IAM users and enforcement on the shared server: over a second
def test_access_denied(s3, bucket_with_raw, capsys):
    """A user without any permission, then one who may read but not write: both refused at once."""
    nobody = s3.user_keys("nobody")
    # moto names HEAD bucket "s3:HeadBucket" (AWS checks s3:ListBucket for it): allowed, like any reader.
    read_only = ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"]
    reader = s3.user_keys(
        "reader", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": read_only, "Resource": "*"}]}
    )
    s3.enforce_iam(True)
    try:
        line = _refused(
            capsys, ["--input", f"s3://{bucket_with_raw}/raw", "--output", f"s3://{bucket_with_raw}/ds", *_keys_args(s3, *nobody)]
        )
        assert f"s3://{bucket_with_raw}/ds" in line and "access denied" in line
        line = _refused(
            capsys, ["--input", f"s3://{bucket_with_raw}/raw", "--output", f"s3://{bucket_with_raw}/ds", *_keys_args(s3, *reader)]
        )
        assert f"s3://{bucket_with_raw}/ds/_writer.lock" in line and "access denied" in line
    finally:
        s3.enforce_iam(False)
    assert s3.keys(bucket_with_raw) == ["raw/part-00000-of-00001.parquet"]
