"""Benchmark: the per-pair and per-destination statistics of the evaluation's train fit, three ways.

    python benchmarks/eval_groupby_bench.py --data_dir D [--bucket_rows 1000000]

On the train split of a pretokenized dataset (decoded once into columns, in memory, before any timing):

* ``buckets``: what ``trainer.eval.fitting`` does, measurements spilled to files by destination, each file
  reduced by ``trainer.eval.baselines.fit`` (exact medians and 10/90% percentiles with numpy's interpolation,
  failure shares, the pair's last RTT by (timestamp, file order));
* ``duckdb`` (if installed): one SQL group-by per key with ``quantile_cont`` (exact), ``count``, the failure
  share and ``arg_max`` for the last value, spilling to disk by itself beyond its memory limit;
* ``acero`` (pyarrow's ``Table.group_by``): Arrow has no exact per-group quantile, only ``tdigest`` /
  ``approximate_median``, so it is timed with those and its medians compared.

Prints the wall time of each and how many per-pair medians equal the exact ones.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
from common import machine  # benchmarks/common.py (the script's folder is on sys.path)

from trainer import data
from trainer.eval import baselines as bl
from trainer.eval import columns, fitting


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--bucket_rows", type=int, default=1_000_000)
    parser.add_argument("--engines", default="buckets,acero,duckdb", help="comma-separated: which to time")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    dataset = data.open_dataset(args.data_dir)
    t = time.perf_counter()
    train = columns.decode_split(dataset, "train", columns.Addresses())
    print(f"decoded {len(train):,} train measurements in {time.perf_counter() - t:.1f} s (not counted)")
    src, dst, rtt, ts = train.src, train.dst, train.rtt, train.timestamp

    # The exact reference, in memory.
    t = time.perf_counter()
    ref = bl.fit(bl.Observations(src, dst, rtt, ts))
    print(f"in memory (baselines.fit on the whole split): {time.perf_counter() - t:.1f} s, "
          f"{len(ref.pair.keys):,} pairs, {len(ref.dst.keys):,} destinations")
    nd = max(len(ref.dst.keys), 1)
    ref_pairs = {(int(ref.src_keys[k // nd]), int(ref.dst.keys[k % nd])): m
                 for k, m in zip(ref.pair.keys.tolist(), ref.pair.median.tolist())}

    engines = set(args.engines.split(","))
    if "buckets" in engines:  # by destination, as the fit does (spill, then reduce each bucket)
        folder = tempfile.mkdtemp(prefix="groupby_bench_")
        try:
            t = time.perf_counter()
            buckets = max(1, -(-len(train) // args.bucket_rows))
            spill = fitting._Spill(folder, buckets, np.zeros(buckets, np.int64))
            for lo in range(0, len(train), 200_000):
                spill.write(train.take(np.arange(lo, min(lo + 200_000, len(train)))))
            spilled = time.perf_counter() - t
            store = fitting.PairStore(buckets, int(max(src.max(), dst.max())) + 1, folder)
            parts = [fitting._reduce_bucket(spill, b, store.ids, store) for b in range(buckets)]
            total = time.perf_counter() - t
            print(f"buckets ({buckets}, one thread): {total:.1f} s (spill {spilled:.1f} s), "
                  f"{sum(p.pairs for p in parts):,} pairs, exact")
            store.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    table = pa.table({"src": src, "dst": dst, "rtt": rtt, "ts": ts, "row": np.arange(len(train))})
    if "acero" in engines:  # approximate quantiles only
        ok = table.filter(pa.compute.greater_equal(table["rtt"], 0))
        t = time.perf_counter()
        got = ok.group_by(["src", "dst"]).aggregate([("rtt", "approximate_median"), ("rtt", "tdigest", None),
                                                    ("rtt", "count")])
        table.group_by(["src", "dst"]).aggregate([("rtt", "count"), ("ts", "max")])
        acero = time.perf_counter() - t
        same = sum(ref_pairs.get((s, d)) == m for s, d, m in zip(
            got["src"].to_pylist(), got["dst"].to_pylist(), got["rtt_approximate_median"].to_pylist()))
        print(f"acero (tdigest, approximate_median): {acero:.1f} s, {got.num_rows:,} pairs, "
              f"{same / max(got.num_rows, 1):.1%} of medians exact")
    if "duckdb" not in engines:
        return 0
    try:
        import duckdb  # optional: not a dependency of the project; timed only where installed
    except ImportError:
        print("duckdb: not installed")
        return 0
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{tempfile.gettempdir()}'")
    con.register("m", table)
    t = time.perf_counter()
    got = con.sql(
        "SELECT src, dst, quantile_cont(rtt, [0.1, 0.5, 0.9]) FILTER (WHERE rtt >= 0) AS q, count(*) AS n, "
        "avg((rtt < 0)::DOUBLE) AS fail, arg_max(rtt, (ts, row)) FILTER (WHERE rtt >= 0) AS last "
        "FROM m GROUP BY src, dst").to_arrow_table()
    con.sql("SELECT dst, quantile_cont(rtt, [0.1, 0.5, 0.9]) FILTER (WHERE rtt >= 0) FROM m "
            "GROUP BY dst").to_arrow_table()
    duck = time.perf_counter() - t
    medians = [None if q is None else q[1] for q in got["q"].to_pylist()]
    same = sum(ref_pairs.get((s, d)) == m for s, d, m in zip(got["src"].to_pylist(), got["dst"].to_pylist(), medians))
    print(f"duckdb {duckdb.__version__} (quantile_cont, arg_max): {duck:.1f} s, {got.num_rows:,} pairs, "
          f"{same / max(got.num_rows, 1):.1%} of medians bit-identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
