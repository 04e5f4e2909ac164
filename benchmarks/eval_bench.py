"""Benchmark: the baselines-only evaluation of a whole dataset's test split against `stats --dataset`.

    python benchmarks/eval_bench.py [--rows 2000000] [--workdir DIR] [--repeats 1]

Generates ``--rows`` seed-like rows (beam_pipelines.make_sample.synth), pretokenizes them with the defaults
(split by source), then times, in the same run and on the same dataset,
``python -m beam_pipelines.stats --dataset D`` (the reference) and
``python -m trainer.evaluate --baselines_only --data_dir D --split test --max_measurements 0`` (every
measurement of the test split; the train split decoded and every baseline fitted, vivaldi and the
factorisation included). Both are called through their ``run`` functions, in this process, alternating
``--repeats`` times; the best wall time of each counts. The target: the evaluation takes at most
3x the stats report. With ``--workdir`` an existing dataset there is reused.

Memory: the evaluation is then run once more as its own process (``python -m trainer.evaluate``) under
``/usr/bin/time``, whose maximum resident set size is reported (the in-process figure would mix in the
stats run and the earlier rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
from common import load_average, machine, scratch_folder  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.make_sample import synth
from beam_pipelines.pretokenize import pipeline as pretokenize
from beam_pipelines.stats import pipeline as stats
from trainer.eval import evaluate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--workdir", default=None, help="where to keep the data (default: a temporary directory)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    with scratch_folder(args.workdir, "eval_bench_") as work:
        ds = os.path.join(work, f"dataset_{args.rows}")
        print(f"machine: {machine()}; load average {load_average()}")
        if not os.path.exists(os.path.join(ds, "manifest.json")):
            t = time.perf_counter()
            path = os.path.join(work, f"rows_{args.rows}.parquet")
            pq.write_table(synth.generate(args.rows, seed=0), path, row_group_size=1 << 17, compression="zstd")
            assert pretokenize.run(["--input", path, "--output", ds, "--overwrite"]) == 0
            print(f"generated and pretokenized {args.rows:,} rows in {time.perf_counter() - t:.1f} s")
        with open(os.path.join(ds, "manifest.json")) as f:
            splits = json.load(f)["splits"]
        print("dataset: " + ", ".join(f"{k} {v['records']:,} records / {v['measurements']:,} measurements"
                                      for k, v in sorted(splits.items())))
        best = {"stats": float("inf"), "evaluate": float("inf")}
        phases = {}
        for i in range(args.repeats):
            stats_out = os.path.join(work, "stats_report")
            shutil.rmtree(stats_out, ignore_errors=True)
            t = time.perf_counter()
            assert stats.run(["--dataset", ds, "--output", stats_out]) == 0
            best["stats"] = min(best["stats"], time.perf_counter() - t)
            out = os.path.join(work, "eval_report")
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            assert evaluate.run(["--baselines_only", "--data_dir", ds, "--split", "test", "--output", out,
                                 "--max_measurements", "0", "--no-progress"]) == 0
            wall = time.perf_counter() - t
            if wall < best["evaluate"]:
                best["evaluate"] = wall
                with open(os.path.join(out, "report.json")) as f:
                    phases = json.load(f)["meta"]["timings"]
            print(f"round {i + 1}: stats --dataset {best['stats']:.1f} s, evaluate --baselines_only {wall:.1f} s; "
                  f"load average {load_average()}")
        print("evaluation phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
        out = os.path.join(work, "eval_report_rss")
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb %M", sys.executable, "-m", "trainer.evaluate",
                               "--baselines_only", "--data_dir", ds, "--split", "test", "--output", out,
                               "--no-progress"], capture_output=True, text=True, check=True)
        kb = int(proc.stderr.strip().splitlines()[-1].split()[-1])
        print(f"peak RSS of the evaluation as its own process: {kb / 2**20:.2f} GiB; train measurements "
              f"{splits['train']['measurements']:,}; load average {load_average()}")
        ratio = best["evaluate"] / best["stats"]
        print(f"RESULT {args.rows:,} rows: evaluate --baselines_only (test split, every measurement) "
              f"{best['evaluate']:.1f} s vs stats --dataset {best['stats']:.1f} s: {ratio:.2f}x "
              f"(target <= 3x: {'met' if ratio <= 3 else 'NOT met'}); load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
