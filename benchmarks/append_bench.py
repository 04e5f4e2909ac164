"""Benchmark of ``pretokenize --append``: adding 10% new rows to a dataset vs rebuilding it whole.

    python benchmarks/append_bench.py [--rows 2000000] [--fraction 0.1] [--repeat 3] [--workdir DIR]
        [--runner_args "--direct_num_workers=0"] [--mode_rows 200000,500000,1000000 [--mode_only]]

One generated table of ``rows * (1 + fraction)`` seed-like rows, sorted by time (the generator of
``benchmarks/pretokenize_bench.py``, ``beam_pipelines.make_sample.synth``), is cut in two: the first
``rows`` rows are the dataset (``part-00000.parquet``), the rest the new rows (``part-00001.parquet``),
so the new rows share their sources with the old ones, as an hour of new RIPE Atlas results does.

Same run, interleaved, best of ``--repeat`` each:
- **append, as the hourly update runs it**: a copy of the dataset built from part-00000, then
  ``pretokenize --input DIR --output COPY --append --in_process`` on the whole folder (part-00000 is
  skipped by its sha256, as an hourly update passes every shard; ``beam_pipelines.update`` adds
  ``--in_process`` below ``SMALL_INPUT_ROWS`` new rows);
- **append with the job's default runner**: the same without ``--in_process`` (the DirectRunner, in one
  process below ``SMALL_INPUT_ROWS`` rows to encode);
- **rebuild**: ``pretokenize --input DIR --output NEW`` of both files (all the rows), default runner
  (the DirectRunner's worker processes, one per core, at this size).
Each is a fresh process, timed from outside (wall clock); ``--runner_args`` adds Beam options to the
default-runner runs. One more run, the rebuild in one process (``--direct_running_mode=in_memory``),
shows whether the default is the faster baseline. Prints the figures, the context continuity of the
appended dataset vs the rebuilt one (per split), the machine and the load average before and after.

``--mode_rows N1,N2,...``: for each size, a plain job (no append) on the first N rows of a fresh table,
best of ``--repeat``, with ``--in_process`` (no Beam), with Beam in one process
(``--direct_running_mode=in_memory``) and with Beam's worker processes
(``--direct_running_mode=multi_processing``): where the default's size rule (``SMALL_INPUT_ROWS``) pays.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
from common import load_average, machine, scratch_folder  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.make_sample import synth


def make_inputs(rows: int, fraction: float, directory: str, seed: int = 1) -> tuple[str, str]:
    """``part-00000.parquet`` (``rows`` rows) and ``part-00001.parquet`` (the next ``rows * fraction``),
    cut from one time-sorted table, in 250k-row row groups."""
    os.makedirs(directory, exist_ok=True)
    new_rows = round(rows * fraction)
    table = synth.generate(rows + new_rows, seed=seed)
    old, new = os.path.join(directory, "part-00000.parquet"), os.path.join(directory, "part-00001.parquet")
    pq.write_table(table.slice(0, rows), old, row_group_size=250_000, compression="zstd")
    pq.write_table(table.slice(rows), new, row_group_size=250_000, compression="zstd")
    return old, new


def job(args: list[str], runner_args: list[str]) -> tuple[float, str]:
    """Run pretokenize in a fresh process; returns (wall seconds, stdout)."""
    cmd = [sys.executable, "-m", "beam_pipelines.pretokenize", *args, *runner_args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pretokenize failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def load(path: str) -> dict:
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def mode_table(sizes: list[int], repeat: int, work: str) -> None:
    """Best wall time of a plain job per size and mode (see the module docstring)."""
    folder = os.path.join(work, "modes")
    os.makedirs(folder, exist_ok=True)
    table = synth.generate(max(sizes), seed=5)
    modes = {"--in_process": ["--in_process"], "beam in one process": ["--direct_running_mode=in_memory"],
             "beam worker processes": ["--direct_running_mode=multi_processing"]}  # fmt: skip
    print(f"plain job, best of {repeat}: " + ", ".join(modes))
    for n in sizes:
        path = os.path.join(folder, f"rows-{n}.parquet")
        pq.write_table(table.slice(0, n), path, row_group_size=250_000, compression="zstd")
        best = {}
        for name, extra in modes.items():
            walls = []
            for _ in range(repeat):
                out = os.path.join(folder, "out")
                shutil.rmtree(out, ignore_errors=True)
                walls.append(job(["--input", path, "--output", out], extra)[0])
            best[name] = min(walls)
        print(f"  {n:>10,} rows: " + ", ".join(f"{k} {v:.2f} s" for k, v in best.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the dataset (default 2M)")
    parser.add_argument("--fraction", type=float, default=0.1, help="new rows as a share of --rows (default 0.1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept (default 3)")
    parser.add_argument("--workdir", help="where inputs and outputs go (default: a temporary folder, removed)")
    parser.add_argument("--runner_args", default="", help="Beam options for every run (default: the job's)")
    parser.add_argument("--mode_rows", default="", help="sizes for the runner-mode table (comma-separated rows)")
    parser.add_argument("--mode_only", action="store_true", help="only the runner-mode table")
    args = parser.parse_args(argv)
    runner_args = shlex.split(args.runner_args)
    # Every run's manifest gets the same `created`, so the two appends' manifests can be compared byte for byte.
    os.environ.setdefault("SOURCE_DATE_EPOCH", str(int(time.time())))

    with scratch_folder(args.workdir, "append-bench-") as work:
        print(f"machine: {machine()}; load average before: {load_average()}")
        if args.mode_rows:
            mode_table([int(n) for n in args.mode_rows.split(",")], args.repeat, work)
            if args.mode_only:
                print(f"load average after: {load_average()}")
                return 0
        inputs = os.path.join(work, "in")
        old, new = make_inputs(args.rows, args.fraction, inputs)
        new_rows = pq.ParquetFile(new).metadata.num_rows
        base = os.path.join(work, "base")
        shutil.rmtree(base, ignore_errors=True)
        base_wall, _ = job(["--input", old, "--output", base], runner_args)
        print(f"dataset: {args.rows:,} rows built in {base_wall:.1f} s; new rows: {new_rows:,} ({args.fraction:.0%})")

        appends, defaults, rebuilds = [], [], []
        appended = os.path.join(work, "appended")
        rebuilt = os.path.join(work, "rebuilt")
        for i in range(args.repeat):
            shutil.rmtree(appended, ignore_errors=True)
            shutil.copytree(base, appended)
            wall, _ = job(["--input", inputs, "--output", appended, "--append", "--in_process"], [])
            appends.append(wall)
            in_process_manifest = load(appended)
            shutil.rmtree(appended, ignore_errors=True)
            shutil.copytree(base, appended)
            wall_d, _ = job(["--input", inputs, "--output", appended, "--append"], runner_args)
            defaults.append(wall_d)
            assert load(appended) == in_process_manifest, "the two appends wrote different manifests"
            shutil.rmtree(rebuilt, ignore_errors=True)
            wall_r, _ = job(["--input", inputs, "--output", rebuilt], runner_args)
            rebuilds.append(wall_r)
            print(f"  run {i + 1}: append --in_process {wall:.2f} s, append (default runner) {wall_d:.2f} s, "
                  f"rebuild {wall_r:.2f} s")  # fmt: skip

        in_process = None
        if not runner_args:
            shutil.rmtree(rebuilt, ignore_errors=True)
            in_process, _ = job(["--input", inputs, "--output", rebuilt, "--direct_running_mode=in_memory"], [])
            print(f"  rebuild in this process (--direct_running_mode=in_memory), once: {in_process:.2f} s")
        a, r = load(appended), load(rebuilt)
        assert a["rows"] == r["rows"], "the append and the rebuild hold different rows"
        best_a, best_d, best_r = min(appends), min(defaults), min(rebuilds)
        print(
            f"append of {new_rows:,} rows to {args.rows:,}: best {best_a:.2f} s with --in_process (the update's), "
            f"{best_d:.2f} s with the default runner; rebuild of {args.rows + new_rows:,} rows: best {best_r:.2f} s; "
            f"append/rebuild {best_a / best_r:.1%} with --in_process, {best_d / best_r:.1%} with the default runner "
            f"(target <= 20%)"
        )
        print("context continuity (share of measurements whose predecessor in the record is of the same source):")
        v2 = a["versions"][-1]
        for s in ("train", "val", "test"):
            print(
                f"  {s:<5} append {a['splits'][s]['context_continuity']:.4f} (version 2 alone "
                f"{v2['splits'][s]['context_continuity']:.4f}), rebuild {r['splits'][s]['context_continuity']:.4f}"
            )
        print(f"load average after: {load_average()}")
        result = {
            "rows": args.rows,
            "new_rows": new_rows,
            "append_s": appends,
            "append_default_runner_s": defaults,
            "rebuild_s": rebuilds,
            "rebuild_in_process_s": in_process,
            "ratio": best_a / best_r,
            "ratio_default_runner": best_d / best_r,
            "continuity": {
                s: {"append": a["splits"][s]["context_continuity"], "rebuild": r["splits"][s]["context_continuity"]}
                for s in ("train", "val", "test")
            },
        }
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
