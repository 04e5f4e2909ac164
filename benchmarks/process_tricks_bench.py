"""Benchmark: what each process trick of the jobs gains, each turned off alone, in one run.

    python benchmarks/process_tricks_bench.py [--big DIR] [--repeat 3] [--sample_repeat 5] [--tree DIR]

The tricks and their switches are in ``beam_pipelines/common/tricks.py``. For each input (the bundled
sample, and ``--big``: a folder of Parquet shards, made with ``make_sample --rows 10000000 --shards 16 --seed
0`` when it does not exist) and each job a trick serves (``pretokenize``; ``stats --input``), the job runs
as a user runs it (``python -m beam_pipelines.JOB``, a fresh process, the defaults) with every trick on and
with one trick off, in pairs (on, off, on, off, ...), the tricks' order turning each round, ``--repeat``
rounds. Each run's wall time is the launcher's, from start to exit; its CPU time is the user + system time
of the whole process tree: this script is the tree's child subreaper (Linux), so orphaned worker
processes are reaped here too and counted. Every run's output files must be byte-identical to the first
run's of the same job and input, or the script fails. Prints medians (wall, CPU, the peak RSS of the largest
process the launcher waited for) and the gain of each trick: (off - on) / off, of the medians, and the median
of each pair's gain (an off run against the all-on run just before it, which cancels a load that drifts
between rounds).

``train`` (in ``--jobs``; the sample only): ``python -m trainer.train tiny`` for 16 steps of 2 records on the
bundled sample, pretokenized once into the scratch folder first, with the defaults otherwise (two Grain
worker processes). Its output is its losses: every run's (step, loss, eval_loss) must equal the first run's.
The trick it serves is ``mallopt`` (``keep_freed_memory_for_xla``, the trainer's setting of the same switch).

``--tree DIR``: the checkout whose code runs (default: this one), so that a copy can be measured while the
working tree changes.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

from common import (  # benchmarks/common.py (the script's folder is on sys.path)
    children_cpu,
    load_average,
    machine,
    scratch_folder,
)

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h: orphaned descendants are re-parented to this process
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The switches (beam_pipelines/common/tricks.py) and the jobs whose processes each trick is in.
TRICKS = {
    "runner": ("PING_LLM_PLAIN_RUNNER", ("pretokenize", "stats")),
    "quick exit": ("PING_LLM_PLAIN_EXIT", ("pretokenize", "stats")),
    "mallopt": ("PING_LLM_PLAIN_MALLOC", ("pretokenize", "train")),
}


def _tree_digest(folder: str) -> str:
    """One sha256 over every file's relative path and bytes under ``folder`` (a manifest's ``created`` times left out)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode() + b"\0")
            with open(path, "rb") as f:
                data = f.read()
            if name == "manifest.json":  # the one thing that differs from run to run: when it was written
                data = re.sub(rb'"created": "[^"]*"', b"", data)
            digest.update(data)
    return digest.hexdigest()


class Run(NamedTuple):
    """One run's measures."""

    wall: float  # s, the launcher's, from start to exit
    cpu: float  # s, user + system, of the whole process tree
    rss: float  # GiB, the peak RSS of the largest process of the tree the launcher waited for


def _run(tree: str, args: list[str], switch: str | None, log: str) -> Run:
    """Run ``python ARGS`` in ``tree`` with ``switch`` set, and measure it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PING_LLM_PLAIN_")}
    env["PYTHONPATH"] = tree
    if switch:
        env[switch] = "1"
    before = children_cpu()
    with open(log, "ab") as out:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], cwd=tree, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
    while True:  # orphaned workers, re-parented here: their CPU time counts once they are reaped
        try:
            os.wait4(-1, 0)
        except ChildProcessError:
            break
    cpu = children_cpu() - before
    if process.returncode != 0:
        raise SystemExit(
            f"error: {' '.join(args)} with {switch or 'every trick on'} exited {process.returncode}; see {log}"
        )
    return Run(wall, cpu, usage.ru_maxrss / 2**20)  # ru_maxrss is in KiB on Linux


TRAIN_ARGS = ["steps=16", "batch_size=2", "warmup_steps=5", "eval_every=0", "eval_batches=4", "checkpoint_every=100",
              "progress=false"]


def _losses_digest(workdir: str) -> str:
    """The run's (step, loss, eval_loss) records from its metrics.jsonl: what a training run's output is here
    (its checkpoints and logs also hold times and rates)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    losses = [(r["step"], r["loss"], r.get("eval_loss")) for r in records]
    return hashlib.sha256(repr(losses).encode()).hexdigest()


def _job_args(job: str, data: str, out: str) -> list[str]:
    if job == "train":
        return ["-m", "trainer.train", "tiny", f"data_dir={data}", f"workdir={out}", *TRAIN_ARGS]
    if job == "pretokenize":
        return ["-m", "beam_pipelines.pretokenize", "--input", data, "--output", out]
    return ["-m", "beam_pipelines.stats", "--input", data, "--output", out, "--no_html"]



def _measure(tree: str, job: str, size: str, data: str, work: str, repeat: int) -> dict[str, list[tuple[Run, Run]]]:
    """Every trick of ``job`` off alone, each off run just after an all-on run, ``repeat`` rounds; the
    (all on, off) pairs by trick."""
    tricks = [name for name, (_, jobs) in TRICKS.items() if job in jobs]
    pairs: dict[str, list[tuple[Run, Run]]] = {name: [] for name in tricks}
    out = os.path.join(work, f"{job}-{size}-out")
    log = os.path.join(work, f"{job}-{size}.log")
    expected = None
    for r in range(repeat):
        order = tricks[r % len(tricks) :] + tricks[: r % len(tricks)]
        for name in order:
            pair = []
            for setting in ("all on", name):
                shutil.rmtree(out, ignore_errors=True)
                switch = None if setting == "all on" else TRICKS[setting][0]
                run = _run(tree, _job_args(job, data, out), switch, log)
                digest = _losses_digest(out) if job == "train" else _tree_digest(out)
                if expected is None:
                    expected = digest
                elif digest != expected:
                    raise SystemExit(f"error: {job} on {size} with {setting} off wrote other bytes than the first run")
                pair.append(run)
                print(f"  {job} {size} round {r + 1} {setting:>12}: wall {run.wall:6.2f} s, CPU {run.cpu:6.2f} s, "
                      f"peak RSS {run.rss:.2f} GiB", flush=True)
            pairs[name].append((pair[0], pair[1]))
    shutil.rmtree(out, ignore_errors=True)
    return pairs


def _report(job: str, size: str, pairs: dict[str, list[tuple[Run, Run]]]) -> list[str]:
    """Table rows: medians of all the all-on runs, then per trick the medians of its off runs, the gain of
    the medians, (off - on) / off, and the median of the gains of its pairs (each off run against the
    all-on run just before it, which cancels a load that drifts between rounds)."""
    on = [run for runs in pairs.values() for run, _ in runs]
    on_wall, on_cpu = statistics.median(r.wall for r in on), statistics.median(r.cpu for r in on)
    on_rss = statistics.median(r.rss for r in on)
    lines = [f"| {job} | {size} | all on | {on_wall:.2f} | {on_cpu:.2f} | {on_rss:.2f} | | | | |"]
    for name, runs in pairs.items():
        wall = statistics.median(off.wall for _, off in runs)
        cpu = statistics.median(off.cpu for _, off in runs)
        rss = statistics.median(off.rss for _, off in runs)
        pair_wall = statistics.median((off.wall - first.wall) / off.wall for first, off in runs)
        pair_cpu = statistics.median((off.cpu - first.cpu) / off.cpu for first, off in runs)
        lines.append(
            f"| {job} | {size} | {name} off | {wall:.2f} | {cpu:.2f} | {rss:.2f} | {(wall - on_wall) / wall:+.1%} "
            f"| {(cpu - on_cpu) / cpu:+.1%} | {pair_wall:+.1%} | {pair_cpu:+.1%} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", default="/tmp/h7_10m", help="Parquet folder of the large input (made when missing)")
    parser.add_argument("--big_rows", type=int, default=10_000_000, help="rows of --big when it is made")
    parser.add_argument("--repeat", type=int, default=3, help="rounds on --big (each trick off once per round)")
    parser.add_argument("--sample_repeat", type=int, default=5, help="rounds on the bundled sample")
    parser.add_argument("--tree", default=REPO, help="the checkout whose code runs")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--jobs", default="pretokenize,stats,train", help="jobs to time, comma-separated")
    parser.add_argument("--sizes", default="sample,big", help="inputs to time: sample, big")
    args = parser.parse_args(argv)

    if not sys.platform.startswith("linux"):
        raise SystemExit(
            "error: this benchmark counts the CPU time of orphaned workers through Linux's child subreaper"
        )
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1)
    tree = os.path.abspath(args.tree)
    print(f"machine: {machine()}; load average before: {load_average()}; code: {tree}", flush=True)
    inputs = {"sample": os.path.join(tree, "data", "sample"), "big": args.big}
    if "big" in args.sizes and not os.path.isdir(args.big):
        make = ["-m", "beam_pipelines.make_sample", "--rows", str(args.big_rows), "--shards", "16", "--seed", "0"]
        make += ["--output", args.big]
        subprocess.run([sys.executable, *make], cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True)
    with scratch_folder(args.work, "process_tricks_bench_") as work:
        table = _table(args, tree, inputs, work)
    print(f"load average after: {load_average()}")
    print("\n".join(table))
    return 0


def _table(args, tree: str, inputs: dict[str, str], work: str) -> list[str]:
    """Every job and input of ``args`` measured (:func:`_measure`): the rows of the closing table."""
    table = [
        ("| job | input | setting | wall s (median) | CPU s (median) | peak RSS GiB (median) | wall gain | CPU gain "
         "| wall gain, pairs | CPU gain, pairs |"),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in args.sizes.split(","):
        for job in args.jobs.split(","):
            if job == "train" and size != "sample":
                continue  # the trainer's input is the pretokenized sample alone
            data = _train_data(tree, inputs["sample"], work) if job == "train" else inputs[size]
            runs = _measure(tree, job, size, data, work, args.sample_repeat if size == "sample" else args.repeat)
            table += _report(job, size, runs)
    return table


def _train_data(tree: str, sample: str, work: str) -> str:
    """The bundled sample pretokenized (the default options) into ``work``, once: the ``train`` job's dataset."""
    out = os.path.join(work, "train-data")
    if not os.path.isfile(os.path.join(out, "manifest.json")):
        args = ["-m", "beam_pipelines.pretokenize", "--input", os.path.join(sample, "*.parquet"), "--output", out]
        subprocess.run([sys.executable, *args], cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True,
                       stdout=subprocess.DEVNULL)
    return out


if __name__ == "__main__":
    sys.exit(main())
