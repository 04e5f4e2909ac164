"""Independent readers for pretokenize outputs, used by the pipeline tests."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import struct

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from array_record.python.array_record_module import ArrayRecordReader

from tokenizer import PAD, decode_measurement, split_measurements

IN_MEMORY = "--direct_running_mode=in_memory"


def load_manifest(out) -> dict:
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def read_split(out, manifest, split) -> np.ndarray:
    """All records of a split, in file order, as (n, seq_len) uint16."""
    seq_len = manifest["seq_len"]
    chunks = []
    for f in manifest["splits"][split]["files"]:
        reader = ArrayRecordReader(os.path.join(out, f["path"]))
        raw = reader.read_all()
        reader.close()
        chunks.append(np.frombuffer(b"".join(raw), dtype="<u2").reshape(-1, seq_len))
    return np.concatenate(chunks) if chunks else np.zeros((0, seq_len), np.uint16)


def row_key(row: dict) -> tuple:
    """A measurement as a comparable tuple, with RTT compared bit for bit."""
    return (
        row["msm_id"],
        row["event_time_s"],
        row["src_addr"],
        row["dst_addr"],
        row["ip_version"],
        struct.pack(">d", row["rtt"]),
        row["size"],
        row["packet_error_count"],
    )


def decoded_records(records: np.ndarray) -> list[list[dict]]:
    out = []
    for rec in records:
        ms = []
        for m in split_measurements(rec):
            d = decode_measurement(m)
            d["event_time_s"] = int(d["event_time"].timestamp())
            ms.append(d)
        out.append(ms)
    return out


def input_rows(paths) -> list[dict]:
    """Every input row with the file and row number it came from, canonicalised independently."""
    rows = []
    for path in paths:
        t = pq.read_table(path)
        secs = pc.floor(pc.divide(t["event_time"].cast("int64"), 1_000_000)).to_pylist()
        for i, r in enumerate(t.to_pylist()):
            r["event_time_s"] = int(secs[i]) if secs[i] is not None else None
            r["source_file"], r["source_row"] = str(path), i
            rows.append(r)
    return rows


def canonical(addr):
    return str(ipaddress.ip_address(addr))


def sha256_file(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree_digest(out) -> dict:
    """sha256 of every file under ``out`` by relative path."""
    digests = {}
    for root, _, files in os.walk(out):
        for name in files:
            p = os.path.join(root, name)
            digests[os.path.relpath(p, out)] = sha256_file(p)
    return digests


def pad_fraction(records: np.ndarray) -> float:
    return float(np.mean(records == PAD)) if records.size else 0.0
