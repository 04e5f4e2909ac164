"""Fixtures for the stats tests: dirty generated rows, Parquet inputs, a hand-packed dataset, and
independent (pyarrow/numpy/per-row) computations of every report figure to compare against."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from beam_pipelines.make_sample import synth
from beam_pipelines.stats.sketches import nearest_rank
from tokenizer import PAD, VOCAB_SIZE, InvalidMeasurement, decode_measurement, encode_table, split_measurements
from tokenizer.measurement import encode_measurement

UTC = dt.timezone.utc


def dirty_table(rows: int, seed: int) -> pa.Table:
    """synth rows (already with empty/null/malformed addresses) plus every other kind of dirt the
    report must count: null/NaN/inf/-inf RTTs, null and odd ip_versions, null timestamps, null and
    out-of-range sizes and error counts."""
    t = synth.generate(rows, seed)
    rng = np.random.default_rng(seed + 1000)
    n = t.num_rows

    def pick(share: float) -> np.ndarray:
        return rng.random(n) < share

    rtt = t.column("rtt").to_numpy().copy()
    rtt_null = pick(0.004)
    rtt[pick(0.003)] = np.nan
    rtt[pick(0.002)] = np.inf
    rtt[pick(0.002)] = -np.inf
    rtt[pick(0.01)] = 0.0
    version = t.column("ip_version").to_numpy().copy()
    version_null = pick(0.003)
    version[pick(0.002)] = 5
    ts_null = pick(0.003)
    size = t.column("size").to_numpy().copy()
    size[pick(0.002)] = 70000
    size[pick(0.002)] = -3
    size_null = pick(0.002)
    errors = t.column("packet_error_count").to_numpy().copy()
    errors[pick(0.002)] = 300
    msm = t.column("msm_id").to_numpy()
    return pa.table(
        {
            "msm_id": pa.array(msm, pa.int64(), mask=pick(0.002)),
            "event_time": pa.array(t.column("event_time").to_numpy(), pa.timestamp("us", tz="UTC"), mask=ts_null),
            "src_addr": t.column("src_addr"),
            "dst_addr": t.column("dst_addr"),
            "ip_version": pa.array(version, pa.int64(), mask=version_null),
            "rtt": pa.array(rtt, pa.float64(), mask=rtt_null),
            "size": pa.array(size, pa.int64(), mask=size_null),
            "packet_error_count": pa.array(errors, pa.int64()),
        }
    )


def other_types(table: pa.Table) -> pa.Table:
    """The same rows in other accepted column types: float sizes, ns timestamps, dictionary strings,
    int32 ids, float32 RTT."""
    size = table.column("size").cast(pa.float64()).to_numpy(zero_copy_only=False).copy()
    size[::97] = 64.5  # non-integral
    return pa.table(
        {
            "msm_id": table.column("msm_id").cast(pa.int32()),
            "event_time": table.column("event_time").cast(pa.timestamp("ns")),
            "src_addr": table.column("src_addr").dictionary_encode(),
            "dst_addr": table.column("dst_addr"),
            "ip_version": table.column("ip_version").cast(pa.int8()),
            "rtt": table.column("rtt").cast(pa.float32()),
            "size": pa.array(size, pa.float64(), mask=table.column("size").is_null().to_numpy(zero_copy_only=False)),
            "packet_error_count": table.column("packet_error_count"),
        }
    )


# --- independent computation of a raw report --------------------------------------------------------


def nearest_rank_value(sorted_values: np.ndarray, percent: int) -> float:
    n = len(sorted_values)
    return float(sorted_values[max(1, math.ceil(percent * n / 100)) - 1])


def _bucket(v, hi=0xFFFF):
    if v is None:
        return "null"
    if isinstance(v, float) and (not math.isfinite(v) or v != math.floor(v)):
        return "non_integral"
    v = int(v)
    if v < 0:
        return "negative"
    if v > hi:
        return f"> {hi}"
    return str(v)


def _reason(row: dict) -> str | None:
    try:
        encode_measurement(row)
    except InvalidMeasurement as exc:
        return exc.reason
    return None


def expected_raw(tables: pa.Table | list[pa.Table], per_row_reasons: bool = True) -> dict:
    """Every checked report.json figure, computed row by row in Python or with numpy on all rows."""
    tables = [tables] if isinstance(tables, pa.Table) else list(tables)
    rows = [r for t in tables for r in t.to_pylist()]
    n = len(rows)
    version = [r["ip_version"] for r in rows]
    rtt = np.array([math.nan if r["rtt"] is None else r["rtt"] for r in rows], dtype=np.float64)
    null_rtt = np.array([r["rtt"] is None for r in rows])
    ok = ~null_rtt & np.isfinite(rtt) & (rtt >= 0)
    v4 = np.array([v == 4 for v in version])
    v6 = np.array([v == 6 for v in version])
    times = [r["event_time"] for r in rows if r["event_time"] is not None]
    times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in times]

    def fmt(t):
        return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"

    exp = {
        "rows": n,
        "ipv4_rows": int(v4.sum()),
        "ipv6_rows": int(v6.sum()),
        "other_ip_version_rows": n - int(v4.sum()) - int(v6.sum()),
        "failed_rows": int(np.sum(~null_rtt & (np.nan_to_num(rtt, nan=0.0) < 0))),
        "successful_rows": int(ok.sum()),
        "rtt_null_rows": int(null_rtt.sum()),
        "rtt_not_finite_rows": int(np.sum(~null_rtt & (np.isnan(rtt) | (rtt == np.inf)))),
        "distinct_msm_id": len({r["msm_id"] for r in rows if r["msm_id"] is not None}),
        "distinct_src_addr": len({r["src_addr"] for r in rows if r["src_addr"] is not None}),
        "distinct_dst_addr": len({r["dst_addr"] for r in rows if r["dst_addr"] is not None}),
        "event_time_min": fmt(min(times)) if times else None,
        "event_time_max": fmt(max(times)) if times else None,
        "event_time_null_rows": n - len(times),
        "rows_per_day": dict(sorted(Counter(t.date().isoformat() for t in times).items())),
        "size_counts": Counter(_bucket(r["size"]) for r in rows),
        "packet_error_count_counts": Counter(_bucket(r["packet_error_count"]) for r in rows),
    }
    per_day_failed = Counter(
        t.date().isoformat()
        for t, r in ((r["event_time"], r) for r in rows)
        if t is not None and r["rtt"] is not None and r["rtt"] < 0
    )
    exp["failed_per_day"] = dict(sorted(per_day_failed.items()))
    good = np.sort(rtt[ok])
    exp["rtt_sorted"] = good
    exp["rtt_by_version"] = {"4": np.sort(rtt[ok & v4]), "6": np.sort(rtt[ok & v6])}
    if per_row_reasons:
        reasons = Counter(r for r in map(_reason, rows) if r)
    else:
        reasons = Counter()
        for t in tables:
            reasons.update(encode_table(t).reason_counts())
    exp["rejected_by_reason"] = dict(reasons)
    exp["rejected_rows"] = sum(reasons.values())
    exp["msm_counts"] = Counter(r["msm_id"] for r in rows if r["msm_id"] is not None)
    exp["src_counts"] = Counter(r["src_addr"] for r in rows if r["src_addr"] is not None)
    exp["dst_counts"] = Counter(r["dst_addr"] for r in rows if r["dst_addr"] is not None)
    return exp


SCALARS = (
    "rows",
    "ipv4_rows",
    "ipv6_rows",
    "other_ip_version_rows",
    "failed_rows",
    "successful_rows",
    "rtt_null_rows",
    "rtt_not_finite_rows",
    "distinct_msm_id",
    "distinct_src_addr",
    "distinct_dst_addr",
    "event_time_min",
    "event_time_max",
    "event_time_null_rows",
    "rows_per_day",
    "rejected_rows",
    "rejected_by_reason",
)


def check_against(report: dict, exp: dict) -> None:
    """Assert every report.json figure equals (or, past the exact limits, is within its bound of) ``exp``."""
    for key in SCALARS:
        assert report[key] == exp[key], key
    assert report["size_counts"] == dict(exp["size_counts"])
    assert report["packet_error_count_counts"] == dict(exp["packet_error_count_counts"])
    assert {d: v["failed_rows"] for d, v in report["per_day"].items() if v["failed_rows"]} == exp["failed_per_day"]
    assert report["tokenizer"]["accepted_rows"] == report["rows"] - exp["rejected_rows"]
    rtt = report["rtt_ms"]
    s = exp["rtt_sorted"]
    assert rtt["count"] == len(s)
    assert rtt["min"] == s[0] and rtt["max"] == s[-1]
    for p in (50, 90, 99):
        if rtt["exact"]:
            assert rtt[f"p{p}"] == nearest_rank_value(s, p)
            assert rtt[f"p{p}"] == np.quantile(s, p / 100, method="inverted_cdf")
        else:
            rank = nearest_rank(p, len(s))
            lo = np.searchsorted(s, rtt[f"p{p}"], "left") + 1
            hi = np.searchsorted(s, rtt[f"p{p}"], "right")
            err = 0 if lo <= rank <= hi else min(abs(rank - lo), abs(rank - hi)) / len(s)
            assert err <= rtt["rank_error_bound"][f"p{p}"] + 1e-12
    for fam in ("4", "6"):
        sv = exp["rtt_by_version"][fam]
        got = report["rtt_ms_by_ip_version"][fam]
        assert got["count"] == len(sv)
        if got["exact"]:
            assert [got[f"p{p}"] for p in (50, 90, 99)] == [nearest_rank_value(sv, p) for p in (50, 90, 99)]
    top = report["top"]
    for column, counts in (
        ("msm_id", exp["msm_counts"]),
        ("src_addr", exp["src_counts"]),
        ("dst_addr", exp["dst_counts"]),
    ):
        if report["distinct"][column]["exact"]:
            assert [e["rows"] for e in top[column]] == sorted(counts.values(), reverse=True)[: len(top[column])]
            assert all(counts[e["value"]] == e["rows"] for e in top[column])
    assert sum(report["rows_per_day"].values()) + report["event_time_null_rows"] == report["rows"]
    assert sum(report["rejected_by_reason"].values()) == report["rejected_rows"]


@pytest.fixture(scope="session")
def dirty():
    return dirty_table(6000, seed=7)


@pytest.fixture(scope="session")
def parquet_inputs(tmp_path_factory, dirty) -> tuple[str, list[pa.Table]]:
    """Three Parquet files (small row groups, one in other column types) and the tables read back."""
    d = tmp_path_factory.mktemp("stats_inputs")
    parts = (dirty.slice(0, 2500), other_types(dirty.slice(2500, 2000)), dirty.slice(4500))
    tables = []
    for i, (part, group) in enumerate(zip(parts, (700, 1000, 1500))):
        path = d / f"part-{i}.parquet"
        pq.write_table(part, path, row_group_size=group)
        tables.append(pq.read_table(path))
    return str(d / "*.parquet"), tables


# --- a hand-packed dataset ---------------------------------------------------------------------------


def pack(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> np.ndarray:
    """Greedy packing of whole measurements into (records, seq_len) uint16 arrays padded with PAD."""
    records, current = [], []
    used = 0
    for i in range(len(offsets) - 1):
        m = tokens[offsets[i] : offsets[i + 1]]
        if used + len(m) > seq_len:
            records.append(np.concatenate(current))
            current, used = [], 0
        current.append(m)
        used += len(m)
    if current:
        records.append(np.concatenate(current))
    out = np.full((len(records), seq_len), PAD, dtype=np.uint16)
    for i, r in enumerate(records):
        out[i, : len(r)] = r
    return out


def write_dataset(directory: str, table: pa.Table, seq_len: int = 256, files_per_split=(2, 1, 1)) -> dict:
    """A dataset in the contract's layout: rows split by row index, packed, written, with a manifest."""
    enc = encode_table(table)
    splits = {}
    bounds = np.linspace(0, len(enc.accepted), 4).astype(int)
    for (name, nfiles), lo, hi in zip(zip(("train", "val", "test"), files_per_split), bounds[:-1], bounds[1:]):
        records = pack(enc.tokens, enc.offsets[lo : hi + 1], seq_len)
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        files = []
        for i, chunk in enumerate(np.array_split(records, nfiles)):
            rel = f"{name}/{name}-{i:05d}-of-{nfiles:05d}.array_record"
            path = os.path.join(directory, rel)
            writer = ArrayRecordWriter(path, "group_size:1")
            for rec in chunk:
                writer.write(rec.astype("<u2").tobytes())
            writer.close()
            with open(path, "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            files.append({"path": rel, "records": len(chunk), "bytes": os.path.getsize(path), "sha256": sha})
        src = enc.src_words[lo:hi]
        splits[name] = {
            "records": len(records),
            "measurements": int(hi - lo),
            "tokens": int(np.sum(records != PAD)),
            "pad_tokens": int(np.sum(records == PAD)),
            "sources": len({(int(a), int(b), int(v)) for (a, b), v in zip(src, enc.ip_version[lo:hi])}),
            "files": files,
        }
    reasons = enc.reason_counts()
    manifest = {
        "format_version": 1,
        "tokenizer": {"name": "v1", "version": 1, "vocab_size": 267, "pad_id": 266},
        "seq_len": seq_len,
        "splits": splits,
        "rejected": {"total": sum(reasons.values()), "by_reason": reasons},
        "inputs": [],
        "options": {},
        "fingerprint": "0" * 64,
    }
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


def decode_dataset(directory: str) -> dict:
    """Per split: every figure the report gives, from decoding every measurement of every record."""
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    seq_len = manifest["seq_len"]
    out = {}
    hist = np.zeros(VOCAB_SIZE, np.int64)
    all_sources = set()
    for name, split in manifest["splits"].items():
        records = measurements = tokens = pad = v4 = v6 = 0
        sources, per_record, tokens_per_record = set(), [], []
        for entry in split["files"]:
            reader = ArrayRecordReader(os.path.join(directory, entry["path"]))
            raw = reader.read_all()
            reader.close()
            for rec in raw:
                ids = np.frombuffer(rec, "<u2")
                assert len(ids) == seq_len
                hist += np.bincount(ids, minlength=VOCAB_SIZE)
                ms = split_measurements(ids)
                records += 1
                measurements += len(ms)
                per_record.append(len(ms))
                n_tokens = sum(len(m) for m in ms)
                tokens_per_record.append(n_tokens)
                tokens += n_tokens
                pad += seq_len - n_tokens
                for m in ms:
                    d = decode_measurement(m)
                    sources.add(d["src_addr"])
                    v4 += d["ip_version"] == 4
                    v6 += d["ip_version"] == 6
        all_sources |= sources
        out[name] = {
            "records": records,
            "measurements": measurements,
            "tokens": tokens,
            "pad_tokens": pad,
            "pad_fraction": pad / (records * seq_len) if records else None,
            "sources": len(sources),
            "ipv4_measurements": v4,
            "ipv6_measurements": v6,
            "measurements_per_record": {
                "min": min(per_record),
                "mean": sum(per_record) / records,
                "max": max(per_record),
                "counts": {str(k): v for k, v in sorted(Counter(per_record).items())},
            },
            "tokens_per_record": {
                "min": min(tokens_per_record),
                "max": max(tokens_per_record),
                "counts": {str(k): v for k, v in sorted(Counter(tokens_per_record).items())},
            },
        }
    return {"splits": out, "histogram": hist.tolist(), "sources": len(all_sources), "manifest": manifest}


def check_dataset_report(report: dict, directory: str) -> None:
    """Assert every dataset report figure equals the one from a decode of every record."""
    truth = decode_dataset(directory)
    manifest = truth["manifest"]
    assert list(report["splits"]) == [s for s in ("train", "val", "test") if s in manifest["splits"]]
    for name, exp in truth["splits"].items():
        got = report["splits"][name]
        for key in (
            "records",
            "measurements",
            "tokens",
            "pad_tokens",
            "pad_fraction",
            "sources",
            "ipv4_measurements",
            "ipv6_measurements",
        ):
            assert got[key] == exp[key], (name, key)
        assert got["measurements_per_record"]["counts"] == exp["measurements_per_record"]["counts"]
        for key in ("min", "max"):
            assert got["measurements_per_record"][key] == exp["measurements_per_record"][key]
            assert got["tokens_per_record"][key] == exp["tokens_per_record"][key]
        assert got["measurements_per_record"]["mean"] == pytest.approx(
            exp["measurements_per_record"]["mean"], rel=1e-12
        )
        assert got["tokens_per_record"]["counts"] == exp["tokens_per_record"]["counts"]
        assert got["files"] == len(manifest["splits"][name]["files"])
    assert report["token_histogram"] == truth["histogram"]
    assert report["vocabulary"]["used_ids"] == sum(1 for c in truth["histogram"] if c)
    assert report["vocabulary"]["pad_tokens"] == truth["histogram"][PAD]
    assert report["totals"]["records"] == sum(s["records"] for s in truth["splits"].values())
    assert report["totals"]["sources"] == truth["sources"]
    assert report["rejected"] == {
        "total": manifest["rejected"]["total"],
        "by_reason": manifest["rejected"]["by_reason"],
    }
    assert report["checks"]["manifest_agrees"], report["checks"]["mismatches"]
    assert report["checks"]["malformed_records"] == 0


@pytest.fixture(scope="session")
def hand_dataset(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("stats_dataset")
    write_dataset(str(d), dirty_table(3000, seed=11))
    return str(d)


@pytest.fixture(scope="session")
def helpers():
    """The helper functions above, for test modules (conftest modules are not importable by name)."""
    import types

    return types.SimpleNamespace(
        dirty_table=dirty_table,
        other_types=other_types,
        expected_raw=expected_raw,
        nearest_rank_value=nearest_rank_value,
        check_against=check_against,
        decode_dataset=decode_dataset,
        check_dataset_report=check_dataset_report,
        write_dataset=write_dataset,
        pack=pack,
    )
