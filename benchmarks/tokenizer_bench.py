"""Throughput of the v1 tokenizer on seed-like data: vectorized ``encode_table`` against a per-row Python loop.

    python benchmarks/tokenizer_bench.py                       # 1M rows, best of 3, pinned to one core
    taskset -c 0 python benchmarks/tokenizer_bench.py --rows 200000 --loop-rows 20000

The data comes from :func:`beam_pipelines.make_sample.synth.generate` (58% IPv4, addresses repeated the way real probes
and targets repeat, a small share of dirty rows). ``encode_table`` is timed on the whole table; the Python
loop of ``encode_measurement`` is timed on a prefix of ``--loop-rows`` rows (already converted with
``to_pylist``, which is not timed) and extrapolated to rows/s. Prints a markdown table.
"""

from __future__ import annotations

import os

# One core: keep any threaded numpy/Arrow kernels to a single thread (set before they are imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pyarrow as pa  # noqa: E402
from common import cpu_name  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.make_sample import synth  # noqa: E402
from tokenizer.errors import InvalidMeasurement  # noqa: E402
from tokenizer.measurement import encode_measurement  # noqa: E402
from tokenizer.table import encode_table  # noqa: E402

TARGET_ROWS_PER_S = 1_000_000


def pin_to_one_core() -> str:
    """Pin this process to one CPU it may already use; returns a description."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[0]})
    return f"pinned to CPU {allowed[0]}"


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def loop(rows: list[dict]) -> int:
    accepted = 0
    for row in rows:
        try:
            encode_measurement(row)
            accepted += 1
        except InvalidMeasurement:
            pass
    return accepted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for encode_table (default 1000000)")
    parser.add_argument("--loop-rows", type=int, default=50_000, help="rows for the Python loop (default 50000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs, the best is reported (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.loop_rows < 1 or args.repeat < 1:
        parser.error("--rows, --loop-rows and --repeat must be >= 1")

    pinned = "not pinned" if args.no_pin else pin_to_one_core()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    table = synth.generate(args.rows, args.seed)
    encode_table(table.slice(0, 10_000))  # warm-up: builds the per-family gather tables once

    result = {}

    def vectorized():
        result["enc"] = encode_table(table)

    t_table = best_of(args.repeat, vectorized)
    enc = result["enc"]
    rows_per_s_table = args.rows / t_table

    n_loop = min(args.loop_rows, args.rows)
    rows = table.slice(0, n_loop).to_pylist()
    t_loop = best_of(args.repeat, lambda: loop(rows))
    rows_per_s_loop = n_loop / t_loop

    machine = f"{cpu_name()}, {os.cpu_count()} CPUs ({pinned}), Python {platform.python_version()}"
    ipv4 = float((enc.ip_version == 4).mean()) if len(enc.ip_version) else 0.0
    print(f"data: synth.generate({args.rows:,}, seed={args.seed}): {len(enc.accepted):,} accepted "
          f"({ipv4:.1%} IPv4), {len(enc.rejected):,} rejected, {len(enc.tokens):,} tokens")
    print(f"encode_table: best of {args.repeat}: {t_table:.3f} s for {args.rows:,} rows")
    print(f"encode_measurement loop: best of {args.repeat}: {t_loop:.3f} s for {n_loop:,} rows")
    print()
    print("| what | rows/s | machine |")
    print("|---|---:|---|")
    print(f"| `encode_table` (vectorized), {args.rows:,} rows, best of {args.repeat} "
          f"| {rows_per_s_table:,.0f} | {machine} |")
    print(f"| `encode_measurement` Python loop, {n_loop:,} rows, best of {args.repeat} "
          f"| {rows_per_s_loop:,.0f} | {machine} |")
    print(f"| speed-up | {rows_per_s_table / rows_per_s_loop:,.1f}x | |")
    print()
    verdict = "meets" if rows_per_s_table >= TARGET_ROWS_PER_S else "MISSES"
    print(f"target >= {TARGET_ROWS_PER_S:,} rows/s for encode_table: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
