"""What ``ingest_atlas --append`` costs: an append of 10% new results vs converting everything again, a
no-op append, and the input hashing that every run now does.

    python benchmarks/ingest_append_bench.py                  # 2.5M + 250k lines, plain JSON lines
    python benchmarks/ingest_append_bench.py --lines 1000000 --format gz

The real file's lines are repeated into ``old`` (``--lines`` results) and ``new`` (a tenth of that), not timed
(``ingest_bench.make_inputs``). Then, wall clock, each with the job's defaults (DirectRunner, one worker per
core), in this order:

1. ``--append`` of ``old`` into an empty output (version 1: what a first update does);
2. ``--append`` of ``old`` + ``new`` (version 2: ``new`` only; ``old`` is hashed and skipped);
3. ``--append`` again (nothing to do: every file hashed, nothing written);
4. the rebuild: a plain run of ``old`` + ``new`` into a fresh output (the baseline for 2);
5. ``discovery.hash_inputs`` of ``old`` + ``new`` alone (the hashing inside 2, 3 and 4).

Prints a markdown table, the machine and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

from common import cpu_name  # benchmarks/common.py (the script's folder is on sys.path)
from ingest_bench import _real, make_inputs

from beam_pipelines.common.cores import usable_cores


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=2_500_000, help="results in the old files (default 2500000)")
    parser.add_argument("--format", choices=("plain", "gz", "bz2"), default="plain", help="input files (default plain)")
    parser.add_argument("--workdir", default=None, help="where to put the inputs and outputs (default: a temp folder)")
    args, beam_args = parser.parse_known_args(argv)

    # Imported here: the package pulls in apache_beam (about 3 s of start-up), which --help never needs.
    from beam_pipelines.ingest_atlas import discovery
    from beam_pipelines.ingest_atlas import pipeline as ingest_atlas

    folder = tempfile.mkdtemp(prefix="ingest_append_bench-", dir=args.workdir)
    rows = []
    try:
        real = _real()
        old_dir, new_dir = os.path.join(folder, "old"), os.path.join(folder, "new")
        os.makedirs(old_dir)
        os.makedirs(new_dir)
        old, old_bytes = make_inputs(old_dir, real, args.lines, args.format, 1)
        new, new_bytes = make_inputs(new_dir, real, args.lines // 10, args.format, 1)
        new_lines = args.lines // 10
        # Both files in one folder, as dumps arrive: the new one sorts after the old one.
        both = os.path.join(folder, "incoming")
        os.makedirs(both)
        os.rename(old[0], os.path.join(both, "a-" + os.path.basename(old[0])))
        os.rename(new[0], os.path.join(both, "b-" + os.path.basename(new[0])))
        a, b = sorted(os.path.join(both, n) for n in os.listdir(both))
        print(f"inputs: {old_bytes / 1e6:,.0f} MB + {new_bytes / 1e6:,.0f} MB ({args.format})", file=sys.stderr)

        out, rebuilt = os.path.join(folder, "out"), os.path.join(folder, "rebuilt")
        load = [os.getloadavg()]

        def job(*argv):
            code = ingest_atlas.run([*argv, *beam_args])
            if code != 0:
                raise SystemExit(f"ingest_atlas {' '.join(argv)} failed with exit code {code}")

        s, _ = _timed(lambda: job("--input", a, "--output", out, "--append"))
        rows.append(("`--append` into an empty output (version 1)", args.lines, s))
        s_append, _ = _timed(lambda: job("--input", both, "--output", out, "--append"))
        rows.append(("`--append` of the new file (version 2; the old one hashed, skipped)", new_lines, s_append))
        s, _ = _timed(lambda: job("--input", both, "--output", out, "--append"))
        rows.append(("`--append` again: nothing to do (both files hashed)", 0, s))
        s_rebuild, _ = _timed(lambda: job("--input", both, "--output", rebuilt))
        rows.append(("rebuild: a plain run of both files (baseline)", args.lines + new_lines, s_rebuild))
        s, _ = _timed(lambda: discovery.hash_inputs([a, b], os.path.getsize(a) + os.path.getsize(b)))
        rows.append(("`hash_inputs` of both files alone", 0, s))
        load.append(os.getloadavg())
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    import apache_beam

    print()
    print(f"machine: {cpu_name()}, {usable_cores()} core(s) available, {platform.system()} {platform.release()}; "
          f"Python {platform.python_version()}, apache-beam {apache_beam.__version__}")  # fmt: skip
    print(f"load average before / after: {' '.join(f'{x:.2f}' for x in load[0])} / "
          f"{' '.join(f'{x:.2f}' for x in load[1])}")  # fmt: skip
    print()
    print("| run | results converted | wall clock (s) |")
    print("|---|---:|---:|")
    for what, n, s in rows:
        print(f"| {what} | {n:,} | {s:,.2f} |")
    print()
    print(f"append of 10% new results: {s_append:,.2f} s = {100 * s_append / s_rebuild:.1f}% of the rebuild's {s_rebuild:,.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
