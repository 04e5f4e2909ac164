"""A real S3 API for the object-store tests: moto's server on 127.0.0.1 and a free port, one per session.

The jobs reach it the ways users reach S3: Beam's S3 options (:attr:`S3.beam_args`) or the standard AWS
environment variables (:meth:`S3.env`). The tests read what the jobs wrote with boto3 directly, so the
checks never go through the code under test.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import urllib.request

import pytest

from tests.net import free_port

moto_server = pytest.importorskip("moto.server", reason="the object-store tests need moto[server] (the test extra)")
boto3 = pytest.importorskip("boto3", reason="the object-store tests need boto3 (the test extra)")

KEY_ID, SECRET, REGION = "test-key", "test-secret", "us-east-1"
_buckets = itertools.count()


@dataclasses.dataclass
class S3:
    """The running server: its endpoint, a boto3 client on it, and the job options that point at it."""

    endpoint: str
    client: object

    @property
    def beam_args(self) -> list[str]:
        return [
            f"--s3_endpoint_url={self.endpoint}",
            f"--s3_access_key_id={KEY_ID}",
            f"--s3_secret_access_key={SECRET}",
            f"--s3_region_name={REGION}",
        ]

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION,
        }

    def new_bucket(self) -> str:
        name = f"bucket-{next(_buckets):03d}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(out)

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put_file(self, bucket: str, key: str, path) -> None:
        self.client.upload_file(str(path), bucket, key)

    def user_keys(self, name: str, policy: dict | None = None) -> tuple[str, str]:
        """An IAM user (with ``policy`` inline, if any) and its access key, on the same server."""
        iam = boto3.session.Session().client(
            "iam", endpoint_url=self.endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name=REGION
        )
        iam.create_user(UserName=name)
        if policy is not None:
            import json

            iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def enforce_iam(self, on: bool) -> None:
        """moto checks every request against IAM from now on (``on``), or lets everything through again."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0" if on else b"inf",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request).read()


@pytest.fixture(scope="session")
def s3_server():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name=REGION
    )
    try:
        yield S3(endpoint=endpoint, client=client)
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The server, with this process's AWS environment cleared (no host credentials or profile leak in)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/ping-llm-test-credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/ping-llm-test-config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no 1 s wait for an instance metadata service
    return s3_server
