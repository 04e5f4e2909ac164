"""Benchmark: what the trainer's commands pay to start, with the locked ml_dtypes and with another release.

    python benchmarks/startup_bench.py [--repeat 7] [--compare ml_dtypes==0.7.0]

Each command runs in a fresh interpreter (this one's, the checkout on ``PYTHONPATH``), ``--repeat`` times:

* ``import ml_dtypes`` (jax imports it first thing);
* ``python -m trainer.train tiny stepz=3``: the command's imports, then its one-line usage error. Every run of
  the trainer pays this before its first step, and so does each of its Grain worker processes, which import
  ``trainer.train`` again (multiprocessing's spawn re-imports the main module).

``--compare SPEC``: the same commands with ``SPEC`` installed into a temporary folder (``pip install --target
--no-deps``, from PyPI) put first on ``PYTHONPATH``, so that only that package differs; the two settings
alternate run by run, which cancels a load that drifts. Prints the median wall and CPU (user + system) time
of each command and setting, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import children_cpu, load_average, machine  # benchmarks/common.py (the script's folder is on sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "import ml_dtypes": ["-c", "import ml_dtypes"],
    "trainer.train, to its usage error": ["-m", "trainer.train", "tiny", "stepz=3"],
}


def _time(args: list[str], pythonpath: str) -> tuple[float, float]:
    """(wall s, CPU s) of ``python ARGS`` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    before = children_cpu()
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    wall = time.perf_counter() - start
    return wall, children_cpu() - before


def _version(pythonpath: str) -> str:
    code = "import ml_dtypes; print(ml_dtypes.__version__)"
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs of each command and setting")
    parser.add_argument("--compare", default=None, help="a requirement to time against the installed one")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average before: {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="startup_bench_") as other:
        settings = {"installed": REPO}
        if args.compare:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", other,
                            args.compare], check=True)
            settings[args.compare] = other + os.pathsep + REPO
        names = {name: f"{name} (ml_dtypes {_version(path)})" for name, path in settings.items()}
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.repeat):
            for command, command_args in COMMANDS.items():
                for name, path in settings.items():
                    times.setdefault((command, name), []).append(_time(command_args, path))
        print(f"load average after: {load_average()}")
        print("| command | setting | wall s (median) | CPU s (median) |")
        print("|---|---|---:|---:|")
        for (command, name), runs in times.items():
            wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
            print(f"| {command} | {names[name]} | {wall:.3f} | {cpu:.3f} |")
        if args.compare:
            for command in COMMANDS:
                base = statistics.median(w for w, _ in times[(command, "installed")])
                other_wall = statistics.median(w for w, _ in times[(command, args.compare)])
                print(f"{command}: {args.compare} takes {other_wall / base:.2f}x the installed release's wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
