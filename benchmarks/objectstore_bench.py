"""Benchmark of pretokenize on an object store: s3 -> s3 against local -> local, in the same run.

    python benchmarks/objectstore_bench.py [--rows 2000000] [--repeat 1] [--tree DIR ...] [--workdir DIR]

Starts moto's S3 server (``moto[server]``, the test extra) on 127.0.0.1 and a free port in this process,
uploads ``--rows`` seed-like rows (``make_sample``'s generator, 2M-row Parquet shards) to a bucket, and runs
``python -m beam_pipelines.pretokenize`` (default runner: multi-process, all cores) twice per repeat, in
fresh processes, alternately: local Parquet -> local dataset, and s3 Parquet -> s3 dataset (Beam's S3
options pointing at the server). Wall times are measured from outside the job; the figure is the ratio
s3 / local (target: at most 2x, so the upload path is not the bottleneck). The two datasets' ArrayRecord
files are compared byte for byte. With ``--tree DIR`` (repeatable; say ``git archive REV | tar -x -C DIR``)
each pair also runs s3 -> s3 with the code of that checkout, in the same alternation, so two versions of
the storage layer are compared in the same run.

The server shares the machine with the job (its CPU time counts against the s3 run), and loopback has
no network latency or bandwidth limit: this measures the job's own cost of going through the store
(uploads, sha256 read-backs, server-side copies, listings), not a real network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
from common import load_average, machine, scratch_folder  # benchmarks/common.py (the script's folder is on sys.path)
from s3_server import KEY_ID, REGION, SECRET, s3_server

from beam_pipelines.make_sample import synth


def make_input(rows: int, directory: str, seed: int = 1) -> list[str]:
    """Seed-like rows in 250k-row row groups, 2M-row shards (as benchmarks/pretokenize_bench.py)."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, lo in enumerate(range(0, rows, 2_000_000)):
        path = os.path.join(directory, f"part-{i:05d}.parquet")
        pq.write_table(synth.generate(min(2_000_000, rows - lo), seed=seed + i), path, row_group_size=250_000, compression="zstd")
        paths.append(path)
    return paths


def run_job(args: list[str], tree: str | None = None) -> float:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    proc = subprocess.run([sys.executable, "-m", "beam_pipelines.pretokenize", *args], capture_output=True, text=True,
                          check=False, cwd=tree, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pretokenize {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (local, s3), alternating")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--tree", action="append", default=[], help="another checkout whose s3 -> s3 run is timed too")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average before: {load_average()}")
    with scratch_folder(args.workdir, "objectstore-bench-") as work, s3_server("bench") as (endpoint, client):
        raw = os.path.join(work, "raw")
        paths = make_input(args.rows, raw)
        for p in paths:
            client.upload_file(p, "bench", f"raw/{os.path.basename(p)}")
        s3_options = [f"--s3_endpoint_url={endpoint}", f"--s3_access_key_id={KEY_ID}",
                      f"--s3_secret_access_key={SECRET}", f"--s3_region_name={REGION}"]
        local_out = os.path.join(work, "out")
        local_times, s3_times = [], []
        tree_times: dict[str, list[float]] = {tree: [] for tree in args.tree}
        for i in range(args.repeat):
            shutil.rmtree(local_out, ignore_errors=True)
            local_times.append(run_job(["--input", os.path.join(raw, "*.parquet"), "--output", local_out]))
            s3_times.append(run_job(["--input", "s3://bench/raw/*.parquet", "--output", f"s3://bench/out-{i}", *s3_options]))
            others = ""
            for k, tree in enumerate(args.tree):
                out = f"s3://bench/out-tree{k}-{i}"
                tree_times[tree].append(run_job(["--input", "s3://bench/raw/*.parquet", "--output", out, *s3_options], tree))
                others += f", s3 -> s3 with {tree} {tree_times[tree][-1]:.1f} s"
            print(f"pair {i + 1}: local -> local {local_times[-1]:.1f} s, s3 -> s3 {s3_times[-1]:.1f} s{others}")

        # The s3 dataset's records must be the local one's, byte for byte.
        same = True
        for root, _, names in os.walk(local_out):
            for name in names:
                if name.endswith(".array_record"):
                    rel = os.path.relpath(os.path.join(root, name), local_out)
                    with open(os.path.join(root, name), "rb") as f:
                        same &= client.get_object(Bucket="bench", Key=f"out-0/{rel}")["Body"].read() == f.read()
        local, remote = min(local_times), min(s3_times)
        print(f"rows {args.rows:,}: local -> local {local:.1f} s ({args.rows / local:,.0f} rows/s), "
              f"s3 -> s3 {remote:.1f} s ({args.rows / remote:,.0f} rows/s): {remote / local:.2f}x "
              f"(best of {args.repeat}); records byte-identical: {same}")
        for tree, times in tree_times.items():
            print(f"s3 -> s3 with {tree}: {min(times):.1f} s, {min(times) / local:.2f}x local (best of {args.repeat})")
        print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
