"""Throughput of ``ingest_atlas`` on real RIPE Atlas results: results/s, on all cores and per core.

    python benchmarks/ingest_bench.py                          # 2.5M lines, plain JSON lines, all cores
    python benchmarks/ingest_bench.py --lines 3000000 --format gz --files 8

The real file (``shared/data/atlas/ping-results.jsonl.gz``, 488,061 results) is repeated to ``--lines``
lines into a temporary folder (not timed), as one plain JSON-lines file (read in byte ranges in
parallel) or as ``--files`` compressed files (one work unit each). Then:

1. the whole job, ``beam_pipelines.ingest_atlas.run`` with its defaults (DirectRunner, multi-process,
   one worker per core), timed wall clock from start to ``_SUCCESS`` (Beam start-up, reading,
   converting, Parquet shards, manifest): results/s and results/s per core;
2. one core, no Beam: ``read_unit.ingest_unit`` on a 500,000-line slice (read, parse, convert, write
   fragment), the per-core cost of the hot path.

Prints a markdown table and the machine. The target is >= 50,000 results/s per core.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import os
import platform
import shutil
import sys
import tempfile
import time

from common import cpu_name  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.common.cores import usable_cores

TARGET_PER_CORE = 50_000
ONE_CORE_LINES = 500_000
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATLAS_FILE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "atlas", "ping-results.jsonl.gz")


def _real() -> bytes:
    with gzip.open(ATLAS_FILE, "rb") as f:
        real = f.read()
    return real if real.endswith(b"\n") else real + b"\n"


def _write_lines(out, real: bytes, n: int) -> None:
    """Write the first ``n`` lines of ``real`` repeated."""
    whole, rest = divmod(n, real.count(b"\n"))
    for _ in range(whole):
        out.write(real)
    cut = 0
    for _ in range(rest):
        cut = real.index(b"\n", cut) + 1
    out.write(real[:cut])


def make_inputs(folder: str, real: bytes, lines: int, fmt: str, files: int) -> tuple[list[str], int]:
    """Repeat the real file's lines to ``lines`` lines in ``files`` files; returns (paths, bytes)."""
    opener = {
        "plain": open,
        "gz": lambda p, m: gzip.open(p, m, compresslevel=1),
        "bz2": lambda p, m: bz2.open(p, m, compresslevel=1),
    }[fmt]
    suffix = {"plain": "", "gz": ".gz", "bz2": ".bz2"}[fmt]
    paths, total = [], 0
    for i in range(files):
        path = os.path.join(folder, f"ping-{i:03d}.jsonl{suffix}")
        with opener(path, "wb") as out:
            _write_lines(out, real, lines // files + (1 if i < lines % files else 0))
        paths.append(path)
        total += os.path.getsize(path)
    return paths, total


def one_core(folder: str, real: bytes, n_lines: int = ONE_CORE_LINES) -> float:
    """results/s of ingest_unit (one work unit, this process, no Beam) on a plain file."""
    # Imported here: the package pulls in apache_beam (about 3 s of start-up) before the inputs are made.
    from beam_pipelines.ingest_atlas import discovery, read_unit

    sample = os.path.join(folder, "one-core.jsonl")
    with open(sample, "wb") as out:
        _write_lines(out, real, n_lines)
    (unit,) = discovery.plan_units(discovery.inspect_inputs([sample]), split_bytes=1 << 40)
    tmp = os.path.join(folder, "one-core-tmp")
    os.makedirs(tmp)
    t0 = time.perf_counter()
    summary = read_unit.ingest_unit(unit, tmp)
    return summary.records / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=2_500_000, help="results to ingest (default 2500000)")
    parser.add_argument("--format", choices=("plain", "gz", "bz2"), default="plain", help="input files (default plain)")
    parser.add_argument("--files", type=int, default=1, help="number of input files (default 1)")
    parser.add_argument("--split_bytes", type=int, default=None, help="range size for a plain file")
    parser.add_argument("--workdir", default=None, help="where to put the inputs and output (default: a temp folder)")
    args, beam_args = parser.parse_known_args(argv)

    from beam_pipelines.ingest_atlas import pipeline as ingest_atlas

    folder = tempfile.mkdtemp(prefix="ingest_bench-", dir=args.workdir)
    try:
        t0 = time.perf_counter()
        real = _real()
        paths, size = make_inputs(folder, real, args.lines, args.format, args.files)
        print(f"inputs: {len(paths)} {args.format} file(s), {size / 1e6:,.0f} MB, {args.lines:,} lines "
              f"(made in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
        job = ["--input", os.path.join(folder, "ping-*"), "--output", os.path.join(folder, "out"), *beam_args]
        if args.split_bytes:
            job += ["--split_bytes", str(args.split_bytes)]
        n = usable_cores()
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        code = ingest_atlas.run(job)
        seconds = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
        if code != 0:
            print(f"ingest_atlas failed with exit code {code}", file=sys.stderr)
            return code
        single = one_core(folder, real)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    rate = args.lines / seconds
    import apache_beam
    import orjson
    import pyarrow

    print()
    print(f"machine: {cpu_name()}, {n} core(s) available, {platform.system()} {platform.release()}; "
          f"Python {platform.python_version()}, apache-beam {apache_beam.__version__}, pyarrow {pyarrow.__version__}, "
          f"orjson {orjson.__version__}")  # fmt: skip
    print(f"load average (1 min) before / after the job: {load_before:.1f} / {load_after:.1f} "
          f"(other work on the machine makes the figures lower bounds)")  # fmt: skip
    print()
    print("| measurement | results | seconds | results/s | results/s per core |")
    print("|---|---:|---:|---:|---:|")
    print(f"| ingest_atlas job, DirectRunner, {n} worker(s), {len(paths)} {args.format} file(s), wall clock "
          f"| {args.lines:,} | {seconds:,.1f} | {rate:,.0f} | {rate / n:,.0f} |")  # fmt: skip
    print(f"| ingest_unit, one core, no Beam (read + parse + convert + Arrow) | {ONE_CORE_LINES:,} "
          f"| {ONE_CORE_LINES / single:,.1f} "
          f"| {single:,.0f} | {single:,.0f} |")  # fmt: skip
    print()
    verdict = "meets" if rate / n >= TARGET_PER_CORE else "misses"
    print(f"target >= {TARGET_PER_CORE:,} results/s per core: the whole job {verdict} it ({rate / n:,.0f}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
