"""Statistics of a pretokenized dataset: every record of every file, checked against the manifest.

Pure functions plus one reader: :func:`summarize_records` turns an ``(n, seq_len)`` block of token
ids into a mergeable :class:`RecordStats` with numpy operations (no per-record or per-measurement
Python); :func:`summarize_file` reads one ArrayRecord file in blocks and verifies it against its
manifest entry; :func:`dataset_report` builds the ``report.json`` dictionary.

The token stream needs no decoding to be counted: role ids never appear as byte tokens, so every
``MeasurementStart`` (0) starts a measurement and every ``SrcIpStart`` (1) starts a source block
``[1, Ipv4Start|Ipv6Start, 4|16 address bytes]``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader

from beam_pipelines.common.files import sha256_file
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.common.errors import InputError
from tokenizer import PAD, VOCAB_SIZE
from tokenizer.vocab import BYTE_OFFSET, IPV4_START, IPV6_START, MEASUREMENT_START, ROLE_NAMES, SRC_IP_START

REPORT_VERSION = 1
READ_BLOCK_RECORDS = 4096  # records read and summarized at a time: 8 MB of ids at seq_len 1024
_SOURCE_DTYPE = np.dtype([("family", "<u8"), ("hi", "<u8"), ("lo", "<u8")])  # one source address


@dataclasses.dataclass
class RecordStats:
    """Mergeable summary of packed records of one split. Every figure is exact."""

    seq_len: int
    records: int = 0
    measurements: int = 0
    ipv4_measurements: int = 0
    ipv6_measurements: int = 0
    tokens: int = 0  # non-PAD tokens
    pad_tokens: int = 0
    malformed_records: int = 0  # PAD not only a suffix, or a non-empty record not starting a measurement
    measurements_per_record: np.ndarray = None  # counts indexed by measurements in a record
    tokens_per_record: np.ndarray = None  # counts indexed by non-PAD tokens in a record
    token_counts: np.ndarray = None  # counts per token id (VOCAB_SIZE entries; larger ids in out_of_vocab)
    out_of_vocab_tokens: int = 0
    sources: np.ndarray = None  # sorted unique source addresses (_SOURCE_DTYPE)

    def __post_init__(self):
        if self.measurements_per_record is None:
            self.measurements_per_record = np.zeros(1, np.int64)
        if self.tokens_per_record is None:
            self.tokens_per_record = np.zeros(self.seq_len + 1, np.int64)
        if self.token_counts is None:
            self.token_counts = np.zeros(VOCAB_SIZE, np.int64)
        if self.sources is None:
            self.sources = np.zeros(0, _SOURCE_DTYPE)

    def merge(self, other: RecordStats) -> RecordStats:
        """Add ``other`` into this summary (in place) and return it."""
        if other.seq_len != self.seq_len:
            raise ValueError(f"cannot merge summaries of seq_len {self.seq_len} and {other.seq_len}")
        for name in (
            "records",
            "measurements",
            "ipv4_measurements",
            "ipv6_measurements",
            "tokens",
            "pad_tokens",
            "malformed_records",
            "out_of_vocab_tokens",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.measurements_per_record = _add_padded(self.measurements_per_record, other.measurements_per_record)
        self.tokens_per_record = self.tokens_per_record + other.tokens_per_record
        self.token_counts = self.token_counts + other.token_counts
        self.sources = np.union1d(self.sources, other.sources)
        return self


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(len(a), len(b)), np.int64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out


def source_keys(flat: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Source addresses of every measurement in a flat token stream.

    Returns (unique sources as _SOURCE_DTYPE, IPv4 measurements, IPv6 measurements).
    """
    at = np.flatnonzero(flat == SRC_IP_START)
    at = at[at + 2 < len(flat)]
    family = flat[at + 1]
    keys = []
    counts = []
    for fam_token, nbytes in ((IPV4_START, 4), (IPV6_START, 16)):
        pos = at[family == fam_token]
        pos = pos[pos + 2 + nbytes <= len(flat)]
        counts.append(len(pos))
        raw = (flat[pos[:, None] + 2 + np.arange(nbytes)].astype(np.int64) - BYTE_OFFSET).astype(
            np.uint64
        )  # (n, nbytes)
        weights = np.uint64(1) << (np.uint64(8) * np.arange(7, -1, -1, dtype=np.uint64))  # big-endian bytes of a word
        key = np.zeros(len(pos), _SOURCE_DTYPE)
        key["family"] = 4 if fam_token == IPV4_START else 6
        if nbytes == 4:
            key["lo"] = (raw * weights[4:]).sum(axis=1, dtype=np.uint64)
        else:
            key["hi"] = (raw[:, :8] * weights).sum(axis=1, dtype=np.uint64)
            key["lo"] = (raw[:, 8:] * weights).sum(axis=1, dtype=np.uint64)
        keys.append(key)
    return np.unique(np.concatenate(keys)), counts[0], counts[1]


def summarize_records(tokens: np.ndarray) -> RecordStats:
    """Summarize an ``(n, seq_len)`` array of token ids (records of one split)."""
    n, seq_len = tokens.shape  # (records, seq_len)
    s = RecordStats(seq_len)
    s.records = n
    if n == 0:
        return s
    is_pad = tokens == PAD  # (records, seq_len)
    pad = is_pad.sum(axis=1)  # (records,)
    starts = (tokens == MEASUREMENT_START).sum(axis=1)  # (records,)
    s.pad_tokens = int(pad.sum())
    s.tokens = n * seq_len - s.pad_tokens
    s.measurements = int(starts.sum())
    s.measurements_per_record = np.bincount(starts).astype(np.int64)
    s.tokens_per_record = np.bincount(seq_len - pad, minlength=seq_len + 1).astype(np.int64)
    # A well-formed record is whole measurements then PAD: no PAD followed by a non-PAD, and a
    # non-empty record begins with MeasurementStart.
    pad_inside = np.any(is_pad[:, :-1] & ~is_pad[:, 1:], axis=1)
    bad_start = (pad < seq_len) & (tokens[:, 0] != MEASUREMENT_START)
    s.malformed_records = int(np.count_nonzero(pad_inside | bad_start))
    counts = np.bincount(tokens.ravel())
    s.token_counts[: min(len(counts), VOCAB_SIZE)] += counts[:VOCAB_SIZE]
    s.out_of_vocab_tokens = int(counts[VOCAB_SIZE:].sum())
    s.sources, s.ipv4_measurements, s.ipv6_measurements = source_keys(tokens.ravel())
    return s


def summarize_file(directory: str, split: str, entry: dict, seq_len: int) -> RecordStats:
    """Read, verify and summarize one file of a dataset (its manifest entry gives records, bytes, sha256).

    Raises :class:`InputError` naming the file when it is missing or disagrees with the manifest.
    """
    path = os.path.join(directory, entry["path"])
    if not os.path.isfile(path):
        raise InputError(f"{path}: listed in {manifest_lib.MANIFEST_NAME} but missing")
    size = os.path.getsize(path)
    if "bytes" in entry and size != entry["bytes"]:
        raise InputError(f"{path}: has {size:,} bytes, {manifest_lib.MANIFEST_NAME} says {entry['bytes']:,}")
    if entry.get("sha256"):
        if sha256_file(path) != entry["sha256"]:
            raise InputError(
                f"{path}: sha256 differs from {manifest_lib.MANIFEST_NAME}; the file was changed or damaged"
            )
    try:
        reader = ArrayRecordReader(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable ArrayRecord file ({exc})") from exc
    out = RecordStats(seq_len)
    try:
        n = reader.num_records()
        if n != entry["records"]:
            raise InputError(f"{path}: has {n:,} records, {manifest_lib.MANIFEST_NAME} says {entry['records']:,}")
        for lo in range(0, n, READ_BLOCK_RECORDS):
            raw = reader.read(list(range(lo, min(lo + READ_BLOCK_RECORDS, n))))
            wrong = [i for i, r in enumerate(raw) if len(r) != 2 * seq_len]
            if wrong:
                i = wrong[0]
                raise InputError(
                    f"{path}: record {lo + i} has {len(raw[i])} bytes, expected {2 * seq_len} (seq_len {seq_len})"
                )
            block = np.frombuffer(b"".join(raw), dtype="<u2").reshape(len(raw), seq_len)  # (records, seq_len)
            out.merge(summarize_records(block))
    finally:
        reader.close()
    return out


def read_dataset_manifest(directory: str) -> dict:
    """The manifest of a pretokenized dataset, with the keys the report needs; raises :class:`InputError`."""
    try:
        manifest = manifest_lib.read_manifest(directory)
    except manifest_lib.ManifestError as exc:
        raise InputError(str(exc)) from exc
    path = os.path.join(directory, manifest_lib.MANIFEST_NAME)
    seq_len = manifest["seq_len"]
    if not isinstance(seq_len, int) or seq_len < 1:
        raise InputError(f"{path}: seq_len {seq_len!r} is not a positive integer")
    if not isinstance(manifest["splits"], dict):
        raise InputError(f"{path}: 'splits' is not an object")
    for name, split in manifest["splits"].items():
        for i, entry in enumerate(split.get("files", [])):
            if not isinstance(entry, dict) or "path" not in entry or "records" not in entry:
                raise InputError(f"{path}: splits.{name}.files[{i}] lacks 'path' or 'records'")
    return manifest


def file_jobs(directory: str, manifest: dict) -> list[tuple[str, str, dict, int]]:
    """(directory, split, file entry, seq_len) for every file, in manifest order."""
    return [
        (directory, name, entry, manifest["seq_len"])
        for name, split in manifest["splits"].items()
        for entry in split.get("files", [])
    ]


def _per_record(counts: np.ndarray, records: int) -> dict:
    used = np.flatnonzero(counts)
    if not records:
        return {"min": None, "mean": None, "max": None, "counts": {}}
    total = int((np.arange(len(counts)) * counts).sum())
    return {
        "min": int(used[0]),
        "mean": total / records,
        "max": int(used[-1]),
        "counts": {str(int(k)): int(counts[k]) for k in used},
    }


_COMPARED = ("records", "measurements", "tokens", "pad_tokens", "sources")


def _split_json(s: RecordStats, files: int, nbytes: int) -> dict:
    capacity = s.records * s.seq_len
    return {
        "records": s.records,
        "measurements": s.measurements,
        "tokens": s.tokens,
        "pad_tokens": s.pad_tokens,
        "pad_fraction": s.pad_tokens / capacity if capacity else None,
        "sources": len(s.sources),
        "ipv4_measurements": s.ipv4_measurements,
        "ipv6_measurements": s.ipv6_measurements,
        "measurements_per_record": _per_record(s.measurements_per_record, s.records),
        "tokens_per_record": _per_record(s.tokens_per_record, s.records),
        "files": files,
        "bytes": nbytes,
    }


def token_names() -> list[str]:
    """A readable name for every token id: role names, ``byte 0x00``..``byte 0xff``, ``PAD``."""
    names = list(ROLE_NAMES) + [f"byte 0x{b:02x}" for b in range(256)] + ["PAD"]
    assert len(names) == VOCAB_SIZE
    return names


_SPLIT_ORDER = ("train", "val", "test")


def _ordered(splits: dict) -> list:
    """Splits as train, val, test, then any others by name (the manifest's JSON keys are sorted)."""
    return sorted(splits.items(), key=lambda kv: (_SPLIT_ORDER.index(kv[0]) if kv[0] in _SPLIT_ORDER else 3, kv[0]))


def dataset_report(directory: str, manifest: dict, per_split: dict[str, RecordStats]) -> dict:
    """The ``report.json`` dictionary of a pretokenized dataset (deterministic: no timings in it)."""
    seq_len = manifest["seq_len"]
    total = RecordStats(seq_len)
    splits = {}
    mismatches = []
    for name, split in _ordered(manifest["splits"]):
        stats = per_split.get(name, RecordStats(seq_len))
        total.merge(stats)
        files = split.get("files", [])
        splits[name] = _split_json(stats, len(files), sum(int(f.get("bytes", 0)) for f in files))
        for key in _COMPARED:
            if key in split and split[key] != splits[name][key]:
                mismatches.append(
                    f"splits.{name}.{key}: manifest says {split[key]:,}, records hold {splits[name][key]:,}"
                )
    counts = total.token_counts
    roles = {ROLE_NAMES[i]: int(counts[i]) for i in range(len(ROLE_NAMES))}
    rejected = manifest.get("rejected", {})
    report = {
        "report": "dataset",
        "report_version": REPORT_VERSION,
        "dataset": directory,
        "manifest": {
            k: manifest.get(k) for k in ("format_version", "fingerprint", "tokenizer", "seq_len", "rows", "options")
        },
        "seq_len": seq_len,
        "splits": splits,
        "totals": {
            k: v
            for k, v in _split_json(
                total, sum(s["files"] for s in splits.values()), sum(s["bytes"] for s in splits.values())
            ).items()
        },
        "token_histogram": counts.tolist(),
        "vocabulary": {
            "size": VOCAB_SIZE,
            "used_ids": int(np.count_nonzero(counts)),
            "unused_ids": np.flatnonzero(counts == 0).tolist(),
            "roles": roles,
            "byte_tokens": int(counts[BYTE_OFFSET : BYTE_OFFSET + 256].sum()),
            "pad_tokens": int(counts[PAD]),
            "out_of_vocab_tokens": total.out_of_vocab_tokens,
        },
        "rejected": {"total": int(rejected.get("total", 0)), "by_reason": dict(rejected.get("by_reason", {}))},
        "checks": {
            "manifest_agrees": not mismatches,
            "mismatches": mismatches,
            "malformed_records": total.malformed_records,
            "out_of_vocab_tokens": total.out_of_vocab_tokens,
        },
    }
    # Sources are distinct per split; across splits a source can repeat (e.g. when splitting by time).
    report["totals"]["sources"] = len(total.sources)
    return report
