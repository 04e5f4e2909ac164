"""Benchmark: rows/s of the raw stats report (python -m beam_pipelines.stats --input) on seed-like rows.

    python benchmarks/stats_bench.py [--rows 2000000] [--row_group 131072] [--workdir DIR] [--dataset]

Generates ``--rows`` seed-like rows (beam_pipelines.make_sample.synth, dirty rows included) into one Parquet
file with ``--row_group``-row row groups (so every core gets work), then runs the stats job the way
users do: DirectRunner, multi-process, one worker per core. Prints the machine, the job's wall time
and rows/s, and for reference the single-process summarize rate without Beam (what one core does).
With ``--dataset`` it also pretokenizes the rows and times ``--dataset`` on the result (records/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import pyarrow.parquet as pq
from common import machine, scratch_folder  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.make_sample import synth
from beam_pipelines.pretokenize import pipeline as pretokenize
from beam_pipelines.stats import pipeline as stats
from beam_pipelines.stats import raw as stats_core


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--row_group", type=int, default=1 << 17)
    parser.add_argument("--workdir", default=None, help="where to write the data (default: a temporary directory)")
    parser.add_argument("--dataset", action="store_true", help="also pretokenize and time the --dataset report")
    args = parser.parse_args(argv)

    with scratch_folder(args.workdir, "stats_bench_") as work:
        print(f"machine: {machine()}")
        t = time.perf_counter()
        table = synth.generate(args.rows, seed=0)
        path = os.path.join(work, "bench.parquet")
        pq.write_table(table, path, row_group_size=args.row_group, compression="zstd")
        print(
            f"generated {args.rows:,} rows ({os.path.getsize(path) / 1e6:.1f} MB, {-(-args.rows // args.row_group)} row groups) "
            f"in {time.perf_counter() - t:.1f} s"
        )

        # Reference: one process, no Beam, the same per-batch summaries and merges.
        t = time.perf_counter()
        pf = pq.ParquetFile(path)
        summary = stats_core.merge_all(stats_core.summarize_batch(b) for b in pf.iter_batches(batch_size=1 << 16))
        stats_core.raw_report(summary, [], path)
        one = time.perf_counter() - t
        print(f"single process, no Beam: {args.rows / one:,.0f} rows/s ({one:.1f} s)")

        t = time.perf_counter()
        rc = stats.run(["--input", path, "--output", os.path.join(work, "report")])
        wall = time.perf_counter() - t
        if rc:
            print("stats job failed", file=sys.stderr)
            return rc
        print(
            f"RESULT stats --input, DirectRunner multi_processing, {os.cpu_count()} workers: "
            f"{args.rows / wall:,.0f} rows/s ({wall:.1f} s wall, report files included)"
        )

        if args.dataset:
            ds = os.path.join(work, "dataset")
            t = time.perf_counter()
            assert pretokenize.run(["--input", path, "--output", ds, "--overwrite"]) == 0
            print(f"pretokenized in {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            assert stats.run(["--dataset", ds, "--output", os.path.join(work, "dataset_report")]) == 0
            wall = time.perf_counter() - t
            with open(os.path.join(work, "dataset_report", "report.json")) as f:
                records = json.load(f)["totals"]["records"]
            print(
                f"RESULT stats --dataset, {os.cpu_count()} processes: {records / wall:,.0f} records/s "
                f"({records * 1024 / wall / 1e6:,.1f} M tokens/s, {wall:.1f} s wall)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
