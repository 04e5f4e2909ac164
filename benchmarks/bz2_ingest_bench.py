"""``ingest_atlas`` on a bz2 file: the parallel decoder (``indexed_bzip2``) against the standard library's,
on 1 and on 2 cores, in the same run.

    python benchmarks/bz2_ingest_bench.py                  # the real file as one bz2 file (bzip2 -9, as RIPE's dumps)
    python benchmarks/bz2_ingest_bench.py --copies 3 --repeats 3

The real file (``shared/data/atlas/ping-results.jsonl.gz``, 488,061 results) is written ``--copies`` times
into one bz2 file at level 9 (not timed; the daily dumps are bzip2 -9, 900 KB blocks). Each measurement is
the whole job (``python -m beam_pipelines.ingest_atlas`` with its defaults: DirectRunner, one worker
process per core) in a fresh process pinned to N cores (``sched_setaffinity``, which is what the job and the
decoder count as usable cores), timed wall clock from start to ``_SUCCESS`` (Beam start-up, planning,
reading, converting, Parquet shards, manifest):

- ``bz2``: ``indexed_bzip2`` made unimportable (a module on ``PYTHONPATH`` that raises ``ImportError``,
  for the job and its workers), so the job falls back to the standard library: one core, one work unit;
- ``indexed_bzip2``: the job's default: the file decoded on every core, one work unit (on 1 core the job
  takes the standard library's decoder even so: indexed_bzip2's serial decoder is the slower);
- ``indexed_bzip2, ranges``: ``--split_bytes`` below the file's size and the split allowed on 2 cores
  (``discovery.BZ2_SPLIT_MIN_CORES``, 8 by default), so the job indexes the file while planning (one decode
  on every core) and reads its text in ranges, one work unit each.

Besides the wall clock, the CPU time of the job and its worker processes (user + system) is shown: on a
machine shared with other jobs it is the steadier figure of the two.

The same configurations (but the ranges) also time the decoder alone: the file's text read through
``decompress.open_stream`` in 4 MiB reads, no parsing, in the same pinned process kind.

Configurations run interleaved, ``--repeats`` times; the table shows the median and every run. Every run's
shards must be byte-identical (checked: same sha256s), whatever the decoder, cores or ranges.
Prints a markdown table, the machine and the load average before and after.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import children_cpu, cpu_name  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.common.cores import usable_cores

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATLAS_FILE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "atlas", "ping-results.jsonl.gz")
TARGET = 1.7  # the parallel decoder on 2 cores against the standard library, whole job
_BLOCKER = "raise ImportError('indexed_bzip2 is made unimportable by bz2_ingest_bench.py')\n"


def make_input(path: str, copies: int) -> int:
    """The real file's text ``copies`` times in one bz2 file at level 9; returns its lines."""
    with gzip.open(ATLAS_FILE, "rb") as f:
        real = f.read()
    real = real if real.endswith(b"\n") else real + b"\n"
    with bz2.open(path, "wb", compresslevel=9) as out:
        for _ in range(copies):
            out.write(real)
    return real.count(b"\n") * copies


def child(args) -> int:
    """One measurement, in this process (pinned to ``--cores`` cores by the parent)."""
    # Imported here: the package pulls in apache_beam (about 3 s of start-up), which the parent never needs.
    from beam_pipelines.ingest_atlas import decompress, discovery
    from beam_pipelines.ingest_atlas import pipeline as ingest_atlas

    decoder = decompress.bz2_decoder()
    if args.decode_only:
        t0 = time.perf_counter()
        text = 0
        with decompress.open_stream(args.input, "bz2") as f:
            while chunk := f.read(decompress.CHUNK_BYTES):
                text += len(chunk)
        print(json.dumps({"seconds": time.perf_counter() - t0, "records": None, "decoder": decoder,
                          "cores": usable_cores(), "shards": None, "text": text}))  # fmt: skip
        return 0
    if args.split_bytes:
        discovery.BZ2_SPLIT_MIN_CORES = 1  # the ranges on any number of cores (the job's default: 8 or more)
    job = ["--input", args.input, "--output", args.output, *(["--split_bytes", str(args.split_bytes)] if args.split_bytes else [])]
    t0 = time.perf_counter()
    with open(os.devnull, "w") as quiet:  # the job's summary and progress lines
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = quiet
        try:
            code = ingest_atlas.run(job)
        finally:
            sys.stdout, sys.stderr = stdout, stderr
    seconds = time.perf_counter() - t0
    if code != 0:
        print(json.dumps({"error": f"exit {code}"}))
        return code
    with open(os.path.join(args.output, "manifest.json")) as f:
        manifest = json.load(f)
    shards = sorted(n for n in os.listdir(args.output) if n.endswith(".parquet"))
    digests = {}
    for name in shards:
        with open(os.path.join(args.output, name), "rb") as f:
            digests[name] = hashlib.sha256(f.read()).hexdigest()
    print(json.dumps({"seconds": seconds, "records": manifest["totals"]["records"], "decoder": decoder,
                      "cores": usable_cores(), "shards": digests}))  # fmt: skip
    return 0


def measure(script: str, bz2_path: str, folder: str, cores: list[int], decoder: str, split: int | None,
            decode_only: bool = False) -> dict:
    env = dict(os.environ)
    if decoder == "bz2":
        blocker = os.path.join(folder, "no_indexed_bzip2")
        os.makedirs(blocker, exist_ok=True)
        with open(os.path.join(blocker, "indexed_bzip2.py"), "w") as f:
            f.write(_BLOCKER)
        env["PYTHONPATH"] = os.pathsep.join([blocker, REPO_ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = os.path.join(folder, "out")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, script, "--child", "--input", bz2_path, "--output", out]
    if split:
        cmd += ["--split_bytes", str(split)]
    if decode_only:
        cmd += ["--decode_only"]
    pin = ",".join(map(str, cores))
    before = children_cpu()
    result = subprocess.run(["taskset", "-c", pin, *cmd], env=env, capture_output=True, text=True, check=False)
    cpu = children_cpu() - before  # the job and its workers (waited for), together
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"measurement failed ({decoder}, cores {pin}): {result.stdout[-2000:]}{result.stderr[-2000:]}")
    found = json.loads(lines[-1])
    if found["decoder"] != decoder or found["cores"] != len(cores):
        raise SystemExit(f"expected {decoder} on {len(cores)} core(s), the job had {found['decoder']} on {found['cores']}")
    return {**found, "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=1, help="copies of the real file's text in the bz2 file (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration (default 2)")
    parser.add_argument("--workdir", default=None, help="where to put the input and outputs (default: a temp folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--split_bytes", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--decode_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        print("this benchmark needs 2 cores", file=sys.stderr)
        return 2
    folder = tempfile.mkdtemp(prefix="bz2_ingest_bench-", dir=args.workdir)
    try:
        path = os.path.join(folder, "ping-2024-01-15T0300.bz2")
        t0 = time.perf_counter()
        lines = make_input(path, args.copies)
        with bz2.open(path, "rb") as f:
            text_bytes = sum(len(chunk) for chunk in iter(lambda: f.read(1 << 24), b""))
        size = os.path.getsize(path)
        print(f"input: one bz2 file (level 9), {size / 1e6:,.1f} MB, {lines:,} lines "
              f"(made in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
        split = max(1 << 20, size // 2)  # below the file's size as stored: the job indexes it and reads ranges
        configs = [
            ("bz2", 1, None),
            ("indexed_bzip2", 1, None),
            ("bz2", 2, None),
            ("indexed_bzip2", 2, None),
            ("indexed_bzip2", 2, split),
        ]
        runs: dict[tuple, list[float]] = {c: [] for c in configs}
        decode: dict[tuple, list[float]] = {c: [] for c in configs if not c[2]}
        cpus: dict[tuple, list[float]] = {c: [] for c in configs}
        shards = None
        load_before = os.getloadavg()[0]
        script = os.path.abspath(__file__)
        for r in range(args.repeats):
            for config in configs:
                decoder, n, split_bytes = config
                found = measure(script, path, folder, available[:n], decoder, split_bytes)
                if found["records"] != lines:
                    raise SystemExit(f"{found['records']} records read, expected {lines}")
                if shards is None:
                    shards = found["shards"]
                elif found["shards"] != shards:
                    raise SystemExit(f"the shards differ ({decoder}, {n} core(s), split {split_bytes})")
                runs[config].append(found["seconds"])
                if config in decode:
                    alone = measure(script, path, folder, available[:n], decoder, None, decode_only=True)
                    decode[config].append(alone["seconds"])
                cpus[config].append(found["cpu"])
                print(f"  run {r + 1}: {decoder:14s} {n} core(s) {'ranges' if split_bytes else 'whole':6s} "
                      f"{found['seconds']:6.1f} s, CPU {found['cpu']:6.1f} s, load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr)  # fmt: skip
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    import indexed_bzip2

    median = {c: statistics.median(v) for c, v in runs.items()}
    print()
    print(f"machine: {cpu_name()}, {len(available)} core(s) available, {platform.system()} {platform.release()}; "
          f"Python {platform.python_version()}, indexed_bzip2 {indexed_bzip2.__version__}")  # fmt: skip
    print(f"load average (1 min) before / after: {load_before:.1f} / {load_after:.1f} "
          f"(other work on the machine makes the figures lower bounds)")  # fmt: skip
    print(f"input: one bz2 file, level 9, {size / 1e6:,.1f} MB, {lines:,} results; the whole job, wall clock, "
          f"median of {args.repeats} (every run in brackets)")  # fmt: skip
    print()
    print("| decoder | cores | work units | wall clock, s | results/s | vs standard library, same cores | CPU s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for config in configs:
        decoder, n, split_bytes = config
        base = median[("bz2", n, None)]
        units = f"ranges (`--split_bytes {split_bytes}`)" if split_bytes else "1 (whole file)"
        every = ", ".join(f"{s:.1f}" for s in runs[config])
        print(f"| {decoder} | {n} | {units} | {median[config]:.1f} ({every}) | {lines / median[config]:,.0f} "
              f"| {base / median[config]:.2f}x | {statistics.median(cpus[config]):.1f} |")  # fmt: skip
    print()
    print(f"The decoder alone (the text read, no parsing), median of {args.repeats}:")
    print()
    print("| decoder | cores | seconds | MB/s of text | vs standard library, same cores |")
    print("|---|---:|---:|---:|---:|")
    for config, times in decode.items():
        decoder, n, _ = config
        m, base = statistics.median(times), statistics.median(decode[("bz2", n, None)])
        every = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {decoder} | {n} | {m:.1f} ({every}) | {text_bytes / m / 1e6:,.1f} | {base / m:.2f}x |")
    print()
    gain = median[("bz2", 2, None)] / median[("indexed_bzip2", 2, None)]
    scale = median[("indexed_bzip2", 1, None)] / median[("indexed_bzip2", 2, None)]
    verdict = "meets" if gain >= TARGET else "misses"
    print(f"indexed_bzip2 on 2 cores vs the standard library on 2 cores: {gain:.2f}x ({verdict} the target >= {TARGET}x); "
          f"indexed_bzip2 from 1 to 2 cores: {scale:.2f}x. Shards byte-identical in every run.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
