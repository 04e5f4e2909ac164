"""Benchmark: the whole chain at the seed's scale on one machine, each step's wall time and peak memory.

    python benchmarks/seed_scale_bench.py [--rows 100000000] [--workdir /work/scale] [--table OUT.md]
        [--train_steps 20] [--max_rss_gb 16] [--keep]

Runs, each as its own process under ``/usr/bin/time`` (wall time and maximum resident set size of that
process and its children):

1. ``python -m beam_pipelines.make_sample --rows N --shards ceil(N / 1M)`` (streamed, in bounded memory);
2. ``python -m beam_pipelines.pretokenize`` with the defaults (split by source, 80/10/10);
3. ``python -m beam_pipelines.stats --input`` on the Parquet, then ``--dataset`` on the records;
4. ``python -m trainer.evaluate --baselines_only --split test --max_measurements 0`` (the whole test split;
   every baseline fitted on the train split);
5. ``python -m trainer.train tiny`` for ``--train_steps`` steps (start-up, checksums of every record file,
   compilation and the first steps), two eval batches at the end.

and prints one Markdown table (also written to ``--table``, default ``seed_scale_N.md`` beside ``--workdir``) with the
machine named, plus the seed-scale targets (make_sample <= 2 GB; evaluate <= 6 GB and <= 3x ``stats
--dataset``). The data (about 3 GB of Parquet and 6 GB of records at 100M rows) goes under ``--workdir``,
which must be outside the repository, and is deleted at the end unless ``--keep``.

A guard thread polls each step's process tree and kills it when its resident memory passes ``--max_rss_gb``
(default 16), so a step that would exhaust a shared machine's memory ends with a row that says so instead
of bringing the kernel's OOM killer down on other jobs; later steps that need its output are skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time

from common import machine  # benchmarks/common.py (the script's folder is on sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (from /proc; 0 once they are gone)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(parts[1]), []).append(int(name))  # parts[1]: the parent's pid
        rss[int(name)] = int(parts[21]) * os.sysconf("SC_PAGE_SIZE")  # parts[21]: rss in pages
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def run_step(name: str, argv: list[str], log: str, max_rss: int) -> dict:
    """Run ``argv`` under /usr/bin/time; returns wall seconds, peak RSS (GB) and how it ended."""
    stats = log + ".time"
    cmd = ["/usr/bin/time", "-f", "%e %M", "-o", stats, *argv]
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {name}: {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    guard = {"killed": False, "peak": 0}

    def watch():
        while proc.poll() is None:
            used = _tree_rss(proc.pid)
            guard["peak"] = max(guard["peak"], used)
            if used > max_rss:
                guard["killed"] = True
                os.killpg(proc.pid, 9)
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    rc = proc.wait()
    thread.join()
    wall = time.perf_counter() - t0
    peak_gb = guard["peak"] / 1e9
    try:
        with open(stats) as f:
            last = f.read().strip().splitlines()[-1].split()
        wall, peak_gb = float(last[0]), int(last[1]) * 1024 / 1e9  # %M is in KiB
    except (OSError, IndexError, ValueError):
        pass  # killed before time could write: the guard's figures stand
    status = "ok" if rc == 0 else (f"killed by the guard above {max_rss / 1e9:.0f} GB" if guard["killed"]
                                   else f"failed (exit {rc}; see {log})")
    print(f"    {status}: {wall:.1f} s, peak RSS {peak_gb:.2f} GB", flush=True)
    return {"step": name, "wall_s": wall, "peak_gb": peak_gb, "ok": rc == 0, "status": status}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--workdir", default="/work/scale", help="data folder, outside the repository")
    parser.add_argument("--table", default=None, help="Markdown table file (default WORKDIR/seed_scale.md)")
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--max_rss_gb", type=float, default=16.0, help="kill a step above this resident memory")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--note", default="", help="added to the table's caption (e.g. the machine was shared)")
    args = parser.parse_args(argv)
    work = os.path.abspath(args.workdir)
    if work == REPO or work.startswith(REPO + os.sep):
        parser.error(f"--workdir {work} is inside the repository")
    if os.path.exists(work) and os.listdir(work):
        parser.error(f"--workdir {work} is not empty")
    os.makedirs(work, exist_ok=True)
    parquet, dataset = os.path.join(work, "parquet"), os.path.join(work, "dataset")
    table_path = args.table or os.path.join(os.path.dirname(work), f"seed_scale_{args.rows}.md")
    py, max_rss = sys.executable, int(args.max_rss_gb * 1e9)
    shards = max(1, -(-args.rows // 1_000_000))
    started = dt.datetime.now(dt.timezone.utc)
    load_before = _load()
    print(f"machine: {machine()}; load average {load_before}", flush=True)
    steps = [
        ("make_sample", [py, "-m", "beam_pipelines.make_sample", "--rows", str(args.rows), "--shards", str(shards),
                         "--output", parquet, "--seed", "0"], []),
        ("pretokenize", [py, "-m", "beam_pipelines.pretokenize", "--input", parquet, "--output", dataset],
         ["make_sample"]),
        ("stats --input", [py, "-m", "beam_pipelines.stats", "--input", parquet, "--output",
                           os.path.join(work, "stats_input")], ["make_sample"]),
        ("stats --dataset", [py, "-m", "beam_pipelines.stats", "--dataset", dataset, "--output",
                             os.path.join(work, "stats_dataset")], ["pretokenize"]),
        ("evaluate --baselines_only --split test", [py, "-m", "trainer.evaluate", "--baselines_only", "--data_dir",
                                                    dataset, "--split", "test", "--max_measurements", "0",
                                                    "--output", os.path.join(work, "eval"), "--no-progress"],
         ["pretokenize"]),
        (f"trainer.train tiny ({args.train_steps} steps)",
         [py, "-m", "trainer.train", "tiny", f"workdir={os.path.join(work, 'run')}", f"data_dir={dataset}",
          f"steps={args.train_steps}", "eval_batches=2", "checkpoint_every=100000", "progress=false",
          "log_every=10"], ["pretokenize"]),
    ]
    results: dict[str, dict] = {}
    try:
        for name, cmd, needs in steps:
            missing = [n for n in needs if not results.get(n, {}).get("ok")]
            if missing:
                results[name] = {"step": name, "ok": False, "status": f"skipped ({missing[0]} did not finish)",
                                 "wall_s": None, "peak_gb": None}
                continue
            results[name] = run_step(name, cmd, os.path.join(work, name.split()[0].replace(".", "_") + "_"
                                                             + str(len(results)) + ".log"), max_rss)
        sizes = {}
        for what, path in (("Parquet", parquet), ("records", dataset)):
            if os.path.isdir(path):
                sizes[what] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"Seed-scale chain, {args.rows:,} rows: `benchmarks/seed_scale_bench.py --rows {args.rows}`, "
        f"{started:%Y-%m-%d %H:%M} UTC, {machine()}; load average {load_before} before, {_load()} after"
        + (f"; {args.note}" if args.note else "") + ". "
        + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in sizes.items()) + ".",
        "",
        "| step | wall time | peak RSS | status |",
        "|---|---|---|---|",
    ]
    for r in results.values():
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.1f} s"
        peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.2f} GB"
        lines.append(f"| `{r['step']}` | {wall} | {peak} | {r['status']} |")
    ev, st, ms = (results.get(k, {}) for k in ("evaluate --baselines_only --split test", "stats --dataset",
                                                "make_sample"))
    lines.append("")
    if ms.get("ok"):
        lines.append(f"Target make_sample peak RSS <= 2 GB: {ms['peak_gb']:.2f} GB, "
                     f"{'met' if ms['peak_gb'] <= 2 else 'not met'}.")
    if ev.get("ok") and st.get("ok"):
        ratio = ev["wall_s"] / st["wall_s"]
        lines.append(f"Target evaluate peak RSS <= 6 GB and wall <= 3x stats --dataset: {ev['peak_gb']:.2f} GB "
                     f"({'met' if ev['peak_gb'] <= 6 else 'not met'}), {ratio:.2f}x "
                     f"({'met' if ratio <= 3 else 'not met'}).")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(table_path)) or ".", exist_ok=True)
    with open(table_path, "w") as f:
        f.write(text)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
