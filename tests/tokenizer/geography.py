"""How much a destination and a source's prefix tell about the RTT, for sources never seen.

    python -m tests.tokenizer.geography 'data/sample/*.parquet'

Used by the sample's tests and for the README's comparison of the sample with the real RIPE Atlas
results (run it on `ingest_atlas` output).
"""

from __future__ import annotations

import glob
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.eval import baselines


def held_out_errors(table: pa.Table) -> dict[str, float]:
    """Median absolute error on held-out sources (every 10th distinct IPv4 source) of three predictors
    fitted on the other sources: the global median, the destination's median, and the median of the
    source's /8 together with the destination (falling back to the destination's median)."""
    ok = pc.and_(pc.greater(table["rtt"], 0), pc.equal(table["ip_version"], 4))
    ok = pc.and_(ok, pc.and_(pc.is_valid(table["dst_addr"]), pc.match_substring(table["src_addr"], ".")))
    t = table.filter(ok)
    src = np.array(t["src_addr"].to_pylist())
    dst = np.array(t["dst_addr"].to_pylist())
    rtt = t["rtt"].to_numpy()
    sources = np.unique(src)
    test = np.isin(src, sources[::10])
    first_octet = np.array([s.split(".")[0] for s in src])
    # The evaluation's baselines, fitted with the source's /8 in place of the source: their pair_median is
    # then the /8 + destination median, falling back to the destination's median and then the global one.
    fitted = baselines.fit(
        baselines.Observations(first_octet[~test], dst[~test], rtt[~test], np.zeros((~test).sum(), np.int64))
    )

    def predicted(name):
        return baselines.predict(fitted, name, first_octet[test], dst[test]).value

    truth = rtt[test]
    return {
        "rows": float(len(rtt)),
        "global": float(np.median(np.abs(truth - predicted("global_median")))),
        "dst": float(np.median(np.abs(truth - predicted("dst_median")))),
        "src8_dst": float(np.median(np.abs(truth - predicted("pair_median")))),
    }


if __name__ == "__main__":
    files = sorted(glob.glob(sys.argv[1]))
    if not files:
        sys.exit(f"no Parquet files match {sys.argv[1]!r}")
    table = pa.concat_tables([pq.read_table(f, columns=["src_addr", "dst_addr", "ip_version", "rtt"]) for f in files])
    print({k: round(v, 1) for k, v in held_out_errors(table).items()})  # rows: successful IPv4 pings
