"""Benchmark of the pretokenize job: throughput, peak memory as the input grows, and a naive baseline.

    python benchmarks/pretokenize_bench.py [--rows 2000000] [--memory_rows 1000000,10000000]
        [--marginal_rows 500000,2500000] [--naive_rows 100000] [--repeat 1] [--tree DIR ...] [--workdir DIR]

All figures come from one run on the current machine:
- end-to-end rows/s of ``python -m beam_pipelines.pretokenize`` (DirectRunner, multi-process, all cores)
  on ``--rows`` seed-like rows, wall time measured from outside the process;
- the largest resident set of any process of the job (``ru_maxrss`` of the job's process tree) for
  each size in ``--memory_rows``: flat means the grouping does not hold the dataset;
- the marginal rate between the two sizes of ``--marginal_rows``: (rows2 - rows1) / (wall2 - wall1),
  the rate at which the job's cost grows with rows once the fixed start-up is paid (median walls of
  ``--repeat`` runs each, the sizes alternating); both sizes run in the
  DirectRunner's multi-process mode (the job's default picks the one-process mode below 2M rows on 2 cores, whose
  smaller start-up would otherwise count as a cost per row);
- a naive baseline on ``--naive_rows`` rows: per-row ``encode_measurement``, a Python packing loop,
  one writer with the job's default compression, in one process; reported as rows/s;
- with ``--tree DIR`` (repeatable): the marginal and memory runs also with the code of another checkout
  (say ``git worktree add /tmp/old HEAD~5``), alternating with this one, in the same run;
- with ``--schemes v1,v2``: the job with each ``--tokenizer`` on the same input (``--input DIR``, say the real
  file's Parquet, or ``--rows`` generated rows), alternating ``--repeat`` times: rows/s (median wall),
  measurements per record, padding, and bytes of records on disk per measurement beside the Parquet input's;
  ``--schemes_only`` skips the rest;
- with ``--stages ROWS``: the CPU time per row of each stage (encode, group and pack, write), the job's stage
  functions run one after the other in this process (no Beam), on ROWS rows; ``--stages_only`` skips the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
from array_record.python.array_record_module import ArrayRecordWriter
from common import load_average, machine, scratch_folder  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.make_sample import synth
from beam_pipelines.pretokenize import options as pretokenize_options
from beam_pipelines.pretokenize import planning, stages
from beam_pipelines.pretokenize.options import DEFAULT_COMPRESSION
from tokenizer import PAD, InvalidMeasurement, encode_measurement

# Runs a command and reports the largest resident set among all the processes it waited for.
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(rc)\n"
)


def make_input(rows: int, directory: str, seed: int = 1) -> str:
    """Seed-like rows in 250k-row row groups, written in 2M-row shards to bound this process's memory."""
    os.makedirs(directory, exist_ok=True)
    chunk = 2_000_000
    for i, lo in enumerate(range(0, rows, chunk)):
        table = synth.generate(min(chunk, rows - lo), seed=seed + i)
        pq.write_table(
            table, os.path.join(directory, f"part-{i:05d}.parquet"), row_group_size=250_000, compression="zstd"
        )
    return directory


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_job(input_dir: str, output: str, *extra: str, tree: str = REPO) -> tuple[float, int, dict]:
    """Run the job (with ``extra`` options) from the checkout ``tree`` in a fresh process tree; returns (wall
    seconds, peak RSS in MiB, manifest)."""
    shutil.rmtree(output, ignore_errors=True)
    cmd = [
        sys.executable,
        "-c",
        _WRAPPER,
        sys.executable,
        "-m",
        "beam_pipelines.pretokenize",
        "--input",
        input_dir,
        "--output",
        output,
        *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=dict(os.environ, PYTHONPATH=tree), check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pretokenize ({tree}) failed:\n{proc.stderr[-3000:]}")
    peak_mib = int(proc.stdout.strip().splitlines()[-1]) // 1024
    with open(os.path.join(output, "manifest.json")) as f:
        return wall, peak_mib, json.load(f)


# What the job's default runner does on larger inputs (pipeline.one_process_rows): the DirectRunner's
# processes, one per core.
MARGINAL_MODE = ("--direct_running_mode=multi_processing", "--direct_num_workers=0")


def naive_baseline(input_dir: str, rows: int, output: str, seq_len: int = 1024) -> float:
    """Per-row encoding, a Python packing loop (sources in time order, first fit), one writer."""
    table = pq.read_table(input_dir).slice(0, rows)
    start = time.perf_counter()
    by_source: dict[str, list] = {}
    for row in table.to_pylist():
        try:
            tokens = encode_measurement(row)
        except InvalidMeasurement:
            continue
        by_source.setdefault(row["src_addr"], []).append((row["event_time"], tokens))
    writer = ArrayRecordWriter(output, f"group_size:1,{DEFAULT_COMPRESSION}")  # the job's default output
    record: list[int] = []
    for source in sorted(by_source):
        for _, tokens in sorted(by_source[source], key=lambda x: x[0]):
            if len(record) + len(tokens) > seq_len:
                writer.write(np.array(record + [PAD] * (seq_len - len(record)), dtype="<u2").tobytes())
                record = []
            record.extend(tokens)
    if record:
        writer.write(np.array(record + [PAD] * (seq_len - len(record)), dtype="<u2").tobytes())
    writer.close()
    return rows / (time.perf_counter() - start)


def stage_costs(input_dir: str, output: str, tokenizer: str = "v1") -> dict[str, float]:
    """CPU seconds per row of each stage, the job's own stage functions run in this process, one after the other."""
    shutil.rmtree(output, ignore_errors=True)
    options, _ = pretokenize_options.parse_args(["--input", input_dir, "--output", output, "--tokenizer", tokenizer])
    tasks, ctx, _ = planning.plan(options)  # (tasks, job context, inputs skipped by an append)
    rows = sum(f["rows"] for f in ctx.inputs)
    ctx.prepare_worker()  # as each stage's worker process does
    costs = {}
    start = time.process_time()
    encoded = [stages.encode_task(task, ctx) for task in tasks]
    costs["encode (read, encode, bucket files)"] = time.process_time() - start
    parts: dict[int, list[str]] = {}
    for summary in encoded:
        for bucket, path in summary.buckets.items():
            parts.setdefault(bucket, []).append(path)
    start = time.process_time()
    packed = [(bucket, stages.pack_bucket(bucket, paths, ctx)) for bucket, paths in sorted(parts.items())]
    costs["group and pack"] = time.process_time() - start
    start = time.process_time()
    for bucket, results in packed:
        for split, result in results:
            stages.write_bucket_records(bucket, split, result, ctx)
    costs["write (ArrayRecord)"] = time.process_time() - start
    shutil.rmtree(output, ignore_errors=True)
    return {name: seconds / rows for name, seconds in costs.items()}


def label(tree: str) -> str:
    return "this checkout" if tree == REPO else tree


def padding(manifest: dict) -> float:
    pad = sum(s["pad_tokens"] for s in manifest["splits"].values())
    total = pad + sum(s["tokens"] for s in manifest["splits"].values())
    return pad / total


def scheme_comparison(args, work: str) -> None:
    """Each scheme of ``--schemes`` on the same input, runs alternating; prints a Markdown table."""
    schemes = [x for x in args.schemes.split(",") if x]
    input_dir = args.input or make_input(args.rows, os.path.join(work, f"in-{args.rows}"))
    parquet = [os.path.join(input_dir, f) for f in sorted(os.listdir(input_dir)) if f.endswith(".parquet")]
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in parquet)
    parquet_bytes = sum(os.path.getsize(f) for f in parquet)
    walls: dict[str, list[float]] = {name: [] for name in schemes}
    manifests = {}
    for _ in range(args.repeat):  # alternating, so a slow spell of the shared machine hits every scheme
        for name in schemes:
            wall, _, manifests[name] = run_job(os.path.join(input_dir, "*.parquet"), os.path.join(work, f"out-{name}"),
                                               "--tokenizer", name)
            walls[name].append(wall)
            print(f"{name}: {rows:,} rows in {wall:.1f} s ({rows / wall:,.0f} rows/s)", flush=True)
    print()
    print(f"| scheme | rows/s (median of {args.repeat}) | measurements per record | padding | record bytes | "
          "bytes per measurement |")
    print("|---|---|---|---|---|---|")
    for name in schemes:
        m = manifests[name]
        splits = m["splits"].values()
        measurements = sum(sp["measurements"] for sp in splits)
        records = sum(sp["records"] for sp in splits)
        nbytes = sum(f["bytes"] for sp in splits for f in sp["files"])
        print(f"| {name} | {rows / statistics.median(walls[name]):,.0f} | {measurements / records:.1f} | "
              f"{100 * padding(m):.2f}% | {nbytes:,} | {nbytes / measurements:.1f} |")
    print(f"| Parquet input | | | | {parquet_bytes:,} | {parquet_bytes / rows:.1f} |")
    # CPU time per row of each stage in this process (not wall time: a loaded machine slows wall time
    # unevenly), alternating the schemes --repeat times, the median of each.
    cpu: dict[str, list[dict]] = {name: [] for name in schemes}
    for _ in range(args.repeat):
        for name in schemes:
            cpu[name].append(stage_costs(input_dir, os.path.join(work, f"out-stages-{name}"), name))
    print()
    print(f"| scheme | CPU per row, stages in one process (median of {args.repeat}) | one core |")
    print("|---|---|---|")
    for name in schemes:
        stages_ = {k: statistics.median(c[k] for c in cpu[name]) for k in cpu[name][0]}
        total = sum(stages_.values())
        print(f"| {name} | " + ", ".join(f"{k} {1e6 * v:.2f} us" for k, v in stages_.items())
              + f"; total {1e6 * total:.2f} us | {1 / total:,.0f} rows/s |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--memory_rows", default="1000000,10000000")
    parser.add_argument("--marginal_rows", default="500000,2500000", help="two sizes; empty to skip")
    parser.add_argument("--naive_rows", type=int, default=100_000)
    parser.add_argument(
        "--tree", action="append", default=[], help="another checkout whose job is timed too (marginal and memory runs)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each marginal size (the median wall is used)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument(
        "--stages", type=int, default=0, help="rows for the per-stage CPU cost in one process (0: skip)"
    )
    parser.add_argument("--stages_only", action="store_true", help="only the per-stage CPU cost (needs --stages)")
    parser.add_argument("--schemes", default="", help="tokenizer schemes compared on the same input, e.g. v1,v2")
    parser.add_argument("--schemes_only", action="store_true", help="only the scheme comparison (needs --schemes)")
    parser.add_argument("--input", default=None, help="--schemes: a directory of Parquet files to use as input")
    args = parser.parse_args(argv)
    with scratch_folder(args.workdir, "pretok-bench-") as work:
        return _run(args, work)


def _run(args, work: str) -> int:
    """Everything :func:`main` measures, in the scratch folder ``work``."""
    print(f"machine: {machine()}; load average before: {load_average()}")

    if args.stages:
        costs = stage_costs(
            make_input(args.stages, os.path.join(work, f"in-{args.stages}")), os.path.join(work, "out-stages")
        )
        total = sum(costs.values())
        print(
            f"CPU per row, stages in one process, {args.stages:,} rows: "
            + ", ".join(f"{name} {1e6 * c:.2f} us" for name, c in costs.items())
            + f"; total {1e6 * total:.2f} us (one core: {1 / total:,.0f} rows/s)",
            flush=True,
        )
        if args.stages_only:
            print(f"load average after: {load_average()}")
            return 0

    if args.schemes:
        scheme_comparison(args, work)
        if args.schemes_only:
            print(f"load average after: {load_average()}")
            return 0

    main_input = make_input(args.rows, os.path.join(work, f"in-{args.rows}"))
    wall, peak, manifest = run_job(main_input, os.path.join(work, "out"))
    rate = args.rows / wall
    print(
        f"pipeline: {args.rows:,} rows in {wall:.1f} s = {rate:,.0f} rows/s, peak RSS {peak:,} MiB, padding {100 * padding(manifest):.2f}%"
    )

    naive = naive_baseline(main_input, args.naive_rows, os.path.join(work, "naive.array_record"))
    print(f"naive baseline: {naive:,.0f} rows/s ({args.naive_rows:,} rows)")

    trees = [REPO, *args.tree]
    marginal = []
    sizes = [int(x) for x in args.marginal_rows.split(",") if x]
    if sizes:
        if len(sizes) != 2 or sizes[0] >= sizes[1]:
            raise SystemExit("--marginal_rows: two increasing sizes, e.g. 500000,2500000")
        dirs = [main_input if rows == args.rows else make_input(rows, os.path.join(work, f"in-{rows}")) for rows in sizes]
        runs = {(tree, i): [] for tree in trees for i in range(2)}
        for _ in range(args.repeat):  # sizes and checkouts alternate, so a slow spell of the machine hits all
            for tree in trees:
                for i, rows in enumerate(sizes):
                    # Both sizes in the same runner mode: the job picks the one-process mode for small inputs,
                    # and the difference of the two modes' fixed costs is not a cost per row.
                    wall_i = run_job(dirs[i], os.path.join(work, f"out-m{rows}"), *MARGINAL_MODE, tree=tree)[0]
                    runs[tree, i].append(wall_i)
                    print(f"marginal ({label(tree)}): {rows:,} rows in {wall_i:.1f} s ({rows / wall_i:,.0f} rows/s)", flush=True)
        for tree in trees:
            walls = [statistics.median(runs[tree, i]) for i in range(2)]
            rate_m = (sizes[1] - sizes[0]) / (walls[1] - walls[0])
            marginal.append((tree, walls, rate_m))
            print(
                f"marginal rate ({label(tree)}) {sizes[0]:,} -> {sizes[1]:,} rows (median walls of {args.repeat}): "
                f"{rate_m:,.0f} rows/s ({rate_m / naive:.1f}x naive)",
                flush=True,
            )

    memory = []
    for rows in [int(x) for x in args.memory_rows.split(",") if x]:
        directory = main_input if rows == args.rows else make_input(rows, os.path.join(work, f"in-{rows}"))
        for tree in trees:
            m_wall, m_peak, _ = run_job(directory, os.path.join(work, f"out-{rows}"), tree=tree)
            memory.append((tree, rows, m_wall, m_peak))
            print(f"memory ({label(tree)}): {rows:,} rows: peak RSS {m_peak:,} MiB, {rows / m_wall:,.0f} rows/s", flush=True)

    print()
    print("| measurement | figure |")
    print("|---|---|")
    print(f"| pipeline, {args.rows:,} rows, DirectRunner all cores | {rate:,.0f} rows/s ({wall:.1f} s) |")
    print(f"| naive baseline (per-row encode, Python packing, one writer) | {naive:,.0f} rows/s |")
    print(f"| speed-up | {rate / naive:.1f}x |")
    for tree, walls, rate_m in marginal:
        print(
            f"| marginal rate ({label(tree)}), {sizes[0]:,} -> {sizes[1]:,} rows (median walls {walls[0]:.1f} s, "
            f"{walls[1]:.1f} s) | {rate_m:,.0f} rows/s ({rate_m / naive:.1f}x naive) |"
        )
    for tree, rows, m_wall, m_peak in memory:
        print(f"| peak RSS of any job process ({label(tree)}), {rows:,} rows | {m_peak:,} MiB ({rows / m_wall:,.0f} rows/s) |")
    print(f"| projected wall time for the seed's 100M rows | {100e6 / rate / 60:.1f} min |")
    print(f"\nmachine: {machine()}; load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
