"""Benchmark of pretokenize over one set of rows in three layouts: the job's cost should follow its rows.

    python benchmarks/pretokenize_layout_bench.py [--rows 20000] [--repeats 3] [--tree DIR ...] [--workdir DIR]

The same ``--rows`` seed-like rows (``synth.generate``) are written as one row group, as row groups of
10 rows (2,000 for 20k rows) and as files of 50 rows (400 files); each is pretokenized as a user would
(``python -m beam_pipelines.pretokenize``, the default runner: one worker process per core), timed from
outside, process start and Beam start-up included; the median of ``--repeats`` runs is reported. The
baseline is the one-row-group layout in the same run; the target is each layout within 2x of it. The
records of every layout are checked to be the same bytes (the manifests' ``splits``).

``--tree DIR`` (repeatable) runs the same inputs with the code of another checkout too (for example an
older commit exported with ``git archive``), so a before/after comparison is measured in one run.
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

import pyarrow.parquet as pq
from common import load_average, machine, scratch_folder  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.make_sample import synth

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_layouts(rows: int, work: str) -> dict[str, str]:
    """The same rows as one row group, as row groups of 10 rows and as files of 50 rows."""
    table = synth.generate(rows, seed=7)
    layouts = {}
    one = os.path.join(work, "one-row-group")
    os.makedirs(one)
    pq.write_table(table, os.path.join(one, "part-0000.parquet"), row_group_size=rows, compression="zstd")
    layouts["1 file, 1 row group"] = one
    groups = os.path.join(work, "row-groups-of-10")
    os.makedirs(groups)
    pq.write_table(table, os.path.join(groups, "part-0000.parquet"), row_group_size=10, compression="zstd")
    layouts[f"1 file, {-(-rows // 10):,} row groups of 10 rows"] = groups
    files = os.path.join(work, "files-of-50")
    os.makedirs(files)
    for i, lo in enumerate(range(0, rows, 50)):
        pq.write_table(table.slice(lo, 50), os.path.join(files, f"part-{i:05d}.parquet"), compression="zstd")
    layouts[f"{-(-rows // 50):,} files of 50 rows"] = files
    return layouts


def run_job(tree: str, input_dir: str, output: str) -> tuple[float, dict]:
    """Wall seconds of one run of the job from ``tree`` and its manifest."""
    shutil.rmtree(output, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=tree)
    cmd = [sys.executable, "-m", "beam_pipelines.pretokenize", "--input", input_dir, "--output", output]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pretokenize ({tree}) failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(output, "manifest.json")) as f:
        return wall, json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[], help="another checkout to time on the same inputs")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"load average before: {load_average()}")
    with scratch_folder(args.workdir, "pretok-layout-") as work:
        _run(args, work)
    print(f"load average after: {load_average()}; machine: {machine()}")
    return 0


def _run(args, work: str) -> None:
    """Every layout made in the scratch folder ``work`` and timed, then the table."""
    layouts = make_layouts(args.rows, os.path.join(work, "in"))

    results = {}  # (tree, layout) -> median wall seconds
    for t, tree in enumerate([REPO, *args.tree]):
        splits = None
        for name, directory in layouts.items():
            walls = []
            for r in range(args.repeats):
                wall, manifest = run_job(tree, directory, os.path.join(work, f"out-{t}-{r}"))
                walls.append(wall)
                if splits is None:
                    splits = manifest["splits"]
                elif manifest["splits"] != splits:
                    raise SystemExit(f"{tree}: the records of {name!r} differ from those of the first layout")
            results[tree, name] = statistics.median(walls)
            print(f"{tree}: {name}: {' '.join(f'{w:.2f}' for w in walls)} s (median {results[tree, name]:.2f} s)", flush=True)

    print()
    print("| code | layout of the same rows | wall time (median) | vs one row group |")
    print("|---|---|---|---|")
    for tree in [REPO, *args.tree]:
        base = results[tree, next(iter(layouts))]
        label = "this checkout" if tree == REPO else tree
        for name in layouts:
            print(f"| {label} | {name} | {results[tree, name]:.2f} s | {results[tree, name] / base:.2f}x |")
    print(f"\nrows: {args.rows:,}; records identical across layouts: yes")


if __name__ == "__main__":
    sys.exit(main())
