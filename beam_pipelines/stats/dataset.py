"""Statistics of a pretokenized dataset: every record of every file, checked against the manifest.

Pure functions plus one reader: :func:`summarize_records` turns an ``(n, seq_len)`` block of token
ids into a mergeable :class:`RecordStats` with numpy operations (no per-record or per-measurement
Python); :func:`summarize_file` verifies one file against its manifest entry and reads it in blocks,
both through the data contract (``beam_pipelines.dataset``); :func:`dataset_report` builds the
``report.json`` dictionary.

The token stream needs no decoding to be counted: role ids never appear as byte tokens, so every
``MeasurementStart`` (0) starts a measurement and every ``SrcIpStart`` (1) starts a source block
``[1, Ipv4Start|Ipv6Start, 4|16 address bytes]``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from beam_pipelines.dataset import iter_record_blocks, verify_file
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from tokenizer import PAD, VOCAB_SIZE
from tokenizer.vocab import BYTE_OFFSET, IPV4_START, IPV6_START, MEASUREMENT_START, ROLE_NAMES, SRC_IP_START

REPORT_VERSION = 1
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
    """Verify one file of a dataset against its manifest entry (size, sha256, record count), then summarize it.

    Raises :class:`~beam_pipelines.dataset.DatasetError` (an ``InputError``) naming the file when it is
    missing, disagrees with the manifest or holds a record of the wrong length.
    """
    verify_file(directory, entry)
    out = RecordStats(seq_len)
    for block in iter_record_blocks(os.path.join(directory, entry["path"]), seq_len):  # (records, seq_len)
        out.merge(summarize_records(block))
    return out


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


def _ordered(splits: dict) -> list:
    """Splits as train, val, test, then any others by name (the manifest's JSON keys are sorted)."""
    rank = {name: i for i, name in enumerate(SPLIT_NAMES)}
    return sorted(splits.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def dataset_report(
    directory: str, manifest: dict, per_split: dict[str, RecordStats], summed_sources: dict[str, int] | None = None
) -> dict:
    """The ``report.json`` dictionary of a pretokenized dataset (deterministic: no timings in it).

    ``manifest`` is the manifest of the version reported (``select_version``). For a dataset of several
    versions, ``summed_sources`` gives per split the sum over versions of each version's distinct sources,
    which is what the manifest's ``sources`` counts (a source in two versions counts twice); the report's
    own ``sources`` are distinct over all the files read."""
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
            found = splits[name][key]
            if key == "sources" and summed_sources is not None:
                found = summed_sources.get(name, 0)
            if key in split and split[key] != found:
                mismatches.append(f"splits.{name}.{key}: manifest says {split[key]:,}, records hold {found:,}")
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
        "version": manifest.get("version", 1),  # the dataset version reported (stats --version)
        "seq_len": seq_len,
        "splits": splits,
        "totals": _split_json(
            total, sum(s["files"] for s in splits.values()), sum(s["bytes"] for s in splits.values())
        ),
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
