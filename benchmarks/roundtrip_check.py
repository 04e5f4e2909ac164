"""Decode every record of every split of a pretokenized dataset with its scheme's ``decode_record`` and
compare with the accepted input rows as a multiset: addresses, time, size, error count exact; RTT within
the scheme's bound (exact for failures and for v1); msm_id exact where the scheme keeps it.

    python benchmarks/roundtrip_check.py --dataset DS --input 'PQ/*.parquet'

Prints one JSON line; exit 1 when a row differs.
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from beam_pipelines.dataset import iter_record_blocks, read_manifest  # noqa: E402
from tokenizer import epoch_seconds, get_scheme  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--input", required=True)
    args = p.parse_args(argv)
    manifest = read_manifest(args.dataset)
    scheme = get_scheme(manifest["tokenizer"])
    decoded = []
    for split in manifest["splits"].values():
        for f in split["files"]:
            for block in iter_record_blocks(os.path.join(args.dataset, f["path"]), manifest["seq_len"]):
                for record in block:
                    decoded += scheme.decode_record(record)
    rejected_files = glob.glob(os.path.join(args.dataset, "rejected", "*.parquet"))
    rejected = {(r["source_file"], r["source_row"]) for path in rejected_files for r in
                pq.read_table(path, columns=["source_file", "source_row"]).to_pylist()}
    want = []
    for path in sorted(glob.glob(args.input)):
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            if (path, i) in rejected or (os.path.abspath(path), i) in rejected:
                continue
            want.append(row)
    keys = ("src_addr", "dst_addr", "event_time", "size", "packet_error_count")

    def key(r, decoded_row):
        if decoded_row:
            base = tuple(r[k] for k in keys)
        else:
            base = (str(ipaddress.ip_address(r["src_addr"])), str(ipaddress.ip_address(r["dst_addr"])),
                    epoch_seconds(r["event_time"]), int(r["size"]), int(r["packet_error_count"]))
        return base + ((r["msm_id"],) if scheme.keeps_msm_id else ()) + (float(r["rtt"]),)

    got = sorted(key(r, True) for r in decoded)
    exp = sorted(key(r, False) for r in want)
    bad = 0
    worst = 0.0
    if len(got) != len(exp):
        bad = abs(len(got) - len(exp))
    for g, e in zip(got, exp):
        if g[:-1] != e[:-1]:
            bad += 1
            continue
        if e[-1] == -1.0 or not scheme.rtt.lo_ms <= e[-1] < scheme.rtt.hi_ms:
            bad += np.float64(g[-1]).tobytes() != np.float64(e[-1]).tobytes()
        else:
            rel = abs(g[-1] / e[-1] - 1)
            worst = max(worst, rel)
            bad += rel > max(scheme.rtt.rel_error, 0.0) + 1e-12
    print(json.dumps({"scheme": scheme.name, "decoded": len(got), "accepted_rows": len(exp), "differing": bad,
                      "max_rtt_rel_error": worst}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
