"""Benchmark of the small object-store calls a job makes, through the two public APIs that could carry them:
Apache Beam's ``FileSystems`` and fsspec (s3fs) as :mod:`beam_pipelines.common.storage` uses it.

    python benchmarks/storage_calls_bench.py [--calls 40]

Starts moto's S3 server (``moto[server]``, the test extra) on 127.0.0.1 and a free port in this process, and
times, alternately in the same run against the same bucket, ``--calls`` repetitions of each call a job
makes by the hundred (markers, sizes, listings, small writes and reads, deletes): once through Beam's public
``FileSystems`` (configured with Beam's S3 options, as the jobs' command lines give them) and once through
``storage`` (fsspec); and, for reference, through one Beam ``S3IO`` object kept and reused (the boto3
client inside Beam's S3 filesystem, which the jobs used before by reading Beam's private attributes).
The figure is milliseconds per call, median of the repetitions.

Beam's public API builds a new S3 client (a boto3 client) on every call; keeping one, as the jobs did
before, meant reading Beam's private attributes. fsspec keeps one client per process and set of options.
Loopback has no network latency: this measures each layer's own cost per call, not a network's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from apache_beam.io.aws import s3io
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from common import load_average, machine  # benchmarks/common.py (the script's folder is on sys.path)
from s3_server import KEY_ID, REGION, SECRET, s3_server

from beam_pipelines.common import object_store, storage


def _beam_calls(options: dict, base: str):
    FileSystems.set_options(PipelineOptions.from_dictionary(options))
    raw = CompressionTypes.UNCOMPRESSED

    def write(i):
        with FileSystems.create(f"{base}/beam/m-{i}", compression_type=raw) as f:
            f.write(b"marker")

    def read(i):
        with FileSystems.open(f"{base}/beam/m-{i}", compression_type=raw) as f:
            return f.read()

    return {
        "write a small object": write,
        "exists": lambda i: FileSystems.exists(f"{base}/beam/m-{i}"),
        "size": lambda i: FileSystems.match([f"{base}/beam/m-{i}"])[0].metadata_list[0].size_in_bytes,
        "read a small object": read,
        "list a prefix (40 objects)": lambda i: len(FileSystems.match([f"{base}/beam/**"])[0].metadata_list),
        "glob (40 objects)": lambda i: len(FileSystems.match([f"{base}/beam/*"])[0].metadata_list),
        "delete": lambda i: FileSystems.delete([f"{base}/beam/m-{i}"]),
    }


def _s3io_calls(options: dict, base: str):
    """One Beam ``S3IO`` object (and so one boto3 client) kept and reused: what the jobs did before fsspec."""
    io = s3io.S3IO(options=PipelineOptions.from_dictionary(options))

    def write(i):
        with io.open(f"{base}/s3io/m-{i}", "wb") as f:
            f.write(b"marker")

    def read(i):
        with io.open(f"{base}/s3io/m-{i}", "rb") as f:
            return f.read()

    return {
        "write a small object": write,
        "exists": lambda i: io.exists(f"{base}/s3io/m-{i}"),
        "size": lambda i: io.size(f"{base}/s3io/m-{i}"),
        "read a small object": read,
        "list a prefix (40 objects)": lambda i: len(list(io.list_files(f"{base}/s3io/"))),
        "glob (40 objects)": lambda i: len(list(io.list_files(f"{base}/s3io/"))),  # S3IO has no glob: a listing
        "delete": lambda i: io.delete(f"{base}/s3io/m-{i}"),
    }


def _fsspec_calls(options: dict, base: str):
    object_store.configure(options)
    return {
        "write a small object": lambda i: object_store.filesystem(base).pipe_file(f"{base}/fsspec/m-{i}", b"marker"),
        "exists": lambda i: storage.exists(f"{base}/fsspec/m-{i}"),
        "size": lambda i: storage.size(f"{base}/fsspec/m-{i}"),
        "read a small object": lambda i: storage.read_bytes(f"{base}/fsspec/m-{i}"),
        "list a prefix (40 objects)": lambda i: len(storage.list_files(f"{base}/fsspec")),
        "glob (40 objects)": lambda i: len(storage.glob(f"{base}/fsspec/*")),
        "delete": lambda i: object_store.filesystem(base).rm_file(f"{base}/fsspec/m-{i}"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="repetitions of each call through each API")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average before: {load_average()}")
    with s3_server("bench") as (endpoint, _):
        options = {"s3_endpoint_url": endpoint, "s3_access_key_id": KEY_ID, "s3_secret_access_key": SECRET,
                   "s3_region_name": REGION}
        apis = {"beam": _beam_calls(options, "s3://bench"), "s3io": _s3io_calls(options, "s3://bench"),
                "fsspec": _fsspec_calls(options, "s3://bench")}
        times: dict = {api: {name: [] for name in calls} for api, calls in apis.items()}
        for name in apis["beam"]:
            for i in range(args.calls):
                for api, calls in apis.items():  # alternate, so both see the same server state and load
                    start = time.perf_counter()
                    calls[name](i)
                    times[api][name].append(time.perf_counter() - start)
        print(f"{'call':28} {'Beam FileSystems':>17} {'one Beam S3IO':>14} {'fsspec (storage)':>17}"
              f"   (ms per call, median of {args.calls})")
        for name in apis["beam"]:
            beam, s3io, fs = (statistics.median(times[api][name]) * 1000 for api in ("beam", "s3io", "fsspec"))
            print(f"{name:28} {beam:17.1f} {s3io:14.1f} {fs:17.1f}")
        print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
