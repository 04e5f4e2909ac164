"""beam_pipelines.common.object_store without a store: URLs, the options handed to s3fs/gcsfs, and a store's
failures (botocore's own exception classes) turned into one error line. The calls against a real S3 API
are in tests/objectstore/."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from beam_pipelines.common import object_store
from beam_pipelines.common.errors import InputError


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "HeadObject")


@pytest.mark.parametrize("path, scheme, bucket, key", [
    ("s3://bucket/a/b.json", "s3", "bucket", "a/b.json"),
    ("GS://bucket", "gs", "bucket", ""),
    ("file:///tmp/x", "", None, None),
    ("/tmp/x", "", None, None),
    ("relative/s3://x", "", None, None),
])
def test_urls(path, scheme, bucket, key):
    assert object_store.scheme(path) == scheme
    if bucket is not None:
        assert object_store.bucket_of(path) == bucket
        assert object_store.key_of(path) == key
    assert object_store.with_protocol("s3", "bucket/k") == "s3://bucket/k"


def test_beam_s3_options_become_s3fs_keywords():
    options = {"s3_endpoint_url": "http://127.0.0.1:9", "s3_access_key_id": "k", "s3_secret_access_key": "s",
               "s3_region_name": "eu-west-1", "s3_verify": False, "s3_disable_ssl": True, "project": "p"}
    assert object_store.fsspec_kwargs("s3", options) == {
        "use_listings_cache": False, "endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
        "client_kwargs": {"region_name": "eu-west-1", "verify": False}, "use_ssl": False}
    assert object_store.fsspec_kwargs("s3", {}) == {"use_listings_cache": False}


def test_gcs_options(monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    assert object_store.fsspec_kwargs("gs", {"project": "p"}) == {
        "use_listings_cache": False, "project": "p", "token": "google_default"}
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    assert object_store.fsspec_kwargs("gs", {})["token"] == "anon"


def test_configure_is_what_later_calls_use():
    try:
        object_store.configure({"s3_endpoint_url": "http://127.0.0.1:9"})
        assert object_store.current_options() == {"s3_endpoint_url": "http://127.0.0.1:9"}
        assert object_store.fsspec_kwargs("s3")["endpoint_url"] == "http://127.0.0.1:9"
    finally:
        object_store.configure({})
    assert object_store.current_options() == {}


def test_explain_the_three_common_mistakes():
    url = "s3://bucket/out"
    assert object_store.explain(url, NoCredentialsError()).startswith(f"{url}: no credentials for s3:// (set AWS_")
    assert "gcloud auth application-default login" in object_store.explain("gs://b/x", NoCredentialsError())
    missing = _client_error("NoSuchBucket", 404, "The specified bucket does not exist")
    assert object_store.explain(url, missing) == f"{url}: bucket 'bucket' does not exist"
    denied = _client_error("AccessDenied", 403, "Access Denied")
    assert object_store.explain(url, denied).startswith(f"{url}: access denied (ClientError: An error occurred")
    # s3fs raises its own translation with botocore's error as the cause: the chain is searched
    try:
        raise PermissionError("Forbidden") from denied
    except PermissionError as exc:
        assert object_store.explain(url, exc) == f"{url}: access denied (PermissionError: Forbidden)"
        assert object_store.http_status(exc) == 403
    assert object_store.explain(url, ValueError("something else")) is None


def test_store_errors_names_the_url():
    with pytest.raises(InputError, match="^s3://bucket/x: bucket 'bucket' does not exist$"):
        with object_store.store_errors("s3://bucket/x"):
            raise _client_error("NoSuchBucket", 404)
    with pytest.raises(OSError, match="^s3://bucket/x: ClientError: An error occurred \\(SlowDown\\)"):
        with object_store.store_errors("s3://bucket/x"):
            raise _client_error("SlowDown", 503, "Please reduce your request rate")
    with pytest.raises(FileNotFoundError):  # an OSError is already clear: it passes as it is
        with object_store.store_errors("s3://bucket/x"):
            raise FileNotFoundError("s3://bucket/x")


def test_unknown_protocol_is_one_input_error():
    with pytest.raises(InputError, match="^nosuchproto://b/x: no filesystem for nosuchproto://"):
        object_store.filesystem("nosuchproto://b/x")
