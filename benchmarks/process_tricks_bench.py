"""Benchmark: what each process trick of the jobs gains, each turned off alone, in one run.

    python benchmarks/process_tricks_bench.py [--big DIR] [--repeat 3] [--tree DIR] [--work DIR]

The tricks and their switches are in ``beam_pipelines/common/tricks.py``. For each input (the bundled
sample, and ``--big``: a folder of Parquet shards, made with ``make_sample --rows 10000000 --shards 16 --seed
0`` when it does not exist) and each job a trick serves (``pretokenize``; ``stats --input``), the job runs
as a user runs it (``python -m beam_pipelines.JOB``, a fresh process, the defaults) with every trick on and
with one trick off, in pairs (on, off, on, off, ...), the tricks' order turning each round, ``--repeat``
rounds. Each run's wall time is the launcher's, from start to exit; its CPU time is the user + system time
of the whole process tree: this script is the tree's child subreaper (Linux), so orphaned worker
processes are reaped here too and counted. Every run's output files must be byte-identical to the first
run's of the same job and input, or the script fails. Prints medians (wall, CPU) and the gain of each trick:
(off - on) / off, on the median of the on runs.

``--tree DIR``: the checkout whose code runs (default: this one), so that a copy can be measured while the
working tree changes.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import machine  # benchmarks/common.py (the script's folder is on sys.path)

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h: orphaned descendants are re-parented to this process
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The switches (beam_pipelines/common/tricks.py) and the jobs whose processes each trick is in.
TRICKS = {
    "runner": ("PING_LLM_PLAIN_RUNNER", ("pretokenize", "stats")),
    "warm workers": ("PING_LLM_PLAIN_WORKERS", ("pretokenize",)),
    "quick exit": ("PING_LLM_PLAIN_EXIT", ("pretokenize", "stats")),
    "mallopt": ("PING_LLM_PLAIN_MALLOC", ("pretokenize",)),
}


def _tree_digest(folder: str) -> str:
    """One sha256 over every file's relative path and bytes under ``folder``."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _run(tree: str, args: list[str], switch: str | None, log: str) -> tuple[float, float]:
    """Run ``python ARGS`` in ``tree`` with ``switch`` set; (wall s of the launcher, CPU s of its whole tree)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PING_LLM_PLAIN_")}
    env["PYTHONPATH"] = tree
    if switch:
        env[switch] = "1"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "ab") as out:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], cwd=tree, env=env, stdout=out, stderr=out)
        _, status, _ = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
    while True:  # orphaned workers, re-parented here: their CPU time counts once they are reaped
        try:
            os.wait4(-1, 0)
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"error: {' '.join(args)} with {switch or 'every trick on'} exited {process.returncode}; see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _job_args(job: str, data: str, out: str) -> list[str]:
    if job == "pretokenize":
        return ["-m", "beam_pipelines.pretokenize", "--input", data, "--output", out]
    return ["-m", "beam_pipelines.stats", "--input", data, "--output", out, "--no_html"]


def _measure(tree: str, job: str, size: str, data: str, work: str, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Every trick of ``job`` off alone, paired with an all-on run, ``repeat`` rounds; the runs by setting."""
    tricks = [name for name, (_, jobs) in TRICKS.items() if job in jobs]
    runs: dict[str, list[tuple[float, float]]] = {"all on": []} | {name: [] for name in tricks}
    out = os.path.join(work, f"{job}-{size}-out")
    log = os.path.join(work, f"{job}-{size}.log")
    expected = None
    for r in range(repeat):
        order = tricks[r % len(tricks) :] + tricks[: r % len(tricks)]
        for name in order:
            for setting in ("all on", name):
                shutil.rmtree(out, ignore_errors=True)
                switch = None if setting == "all on" else TRICKS[setting][0]
                wall, cpu = _run(tree, _job_args(job, data, out), switch, log)
                digest = _tree_digest(out)
                if expected is None:
                    expected = digest
                elif digest != expected:
                    raise SystemExit(f"error: {job} on {size} with {setting} off wrote other bytes than the first run")
                runs[setting].append((wall, cpu))
                print(f"  {job} {size} round {r + 1} {setting:>12}: wall {wall:6.2f} s, CPU {cpu:6.2f} s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return runs


def _report(job: str, size: str, runs: dict[str, list[tuple[float, float]]]) -> list[str]:
    on_wall = statistics.median(w for w, _ in runs["all on"])
    on_cpu = statistics.median(c for _, c in runs["all on"])
    lines = [f"| {job} | {size} | all on | {on_wall:.2f} | {on_cpu:.2f} | | |"]
    for name, pairs in runs.items():
        if name == "all on":
            continue
        wall = statistics.median(w for w, _ in pairs)
        cpu = statistics.median(c for _, c in pairs)
        lines.append(
            f"| {job} | {size} | {name} off | {wall:.2f} | {cpu:.2f} | {(wall - on_wall) / wall:+.1%} | {(cpu - on_cpu) / cpu:+.1%} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", default="/tmp/h7_10m", help="Parquet folder of the large input (made when missing)")
    parser.add_argument("--big_rows", type=int, default=10_000_000, help="rows of --big when it is made")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (each trick off once per round)")
    parser.add_argument("--tree", default=REPO, help="the checkout whose code runs")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--jobs", default="pretokenize,stats", help="jobs to time, comma-separated")
    parser.add_argument("--sizes", default="sample,big", help="inputs to time: sample, big")
    args = parser.parse_args(argv)

    if not sys.platform.startswith("linux"):
        raise SystemExit("error: this benchmark counts the CPU time of orphaned workers through Linux's child subreaper")
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1)
    tree = os.path.abspath(args.tree)
    work = args.work or tempfile.mkdtemp(prefix="process_tricks_bench_")
    os.makedirs(work, exist_ok=True)
    print(f"machine: {machine()}; load average {os.getloadavg()}; code: {tree}", flush=True)
    inputs = {"sample": os.path.join(tree, "data", "sample"), "big": args.big}
    if "big" in args.sizes and not os.path.isdir(args.big):
        make = ["-m", "beam_pipelines.make_sample", "--rows", str(args.big_rows), "--shards", "16", "--output", args.big, "--seed", "0"]
        subprocess.run([sys.executable, *make], cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True)
    table = ["| job | input | setting | wall s (median) | CPU s (median) | wall gain | CPU gain |", "|---|---|---|---:|---:|---:|---:|"]
    for size in args.sizes.split(","):
        for job in args.jobs.split(","):
            runs = _measure(tree, job, size, inputs[size], work, args.repeat)
            table += _report(job, size, runs)
    print(f"load average after: {os.getloadavg()}")
    print("\n".join(table))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
