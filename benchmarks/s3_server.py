"""moto's S3 server on loopback for the object-store benchmarks: one bucket, and the keys that reach it."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator

import boto3
from moto.server import ThreadedMotoServer

KEY_ID, SECRET, REGION = "bench-key", "bench-secret", "us-east-1"


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[tuple[str, object]]:
    """Start moto's S3 server (``moto[server]``, the test extra) in this process on 127.0.0.1 and a free port,
    with ``bucket`` created; yields ``(endpoint URL, boto3 S3 client)``; the server stops when the block ends."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name=REGION
        )
        client.create_bucket(Bucket=bucket)
        yield endpoint, client
    finally:
        server.stop()
