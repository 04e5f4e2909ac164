"""Statistics of a pretokenized dataset: every record of every file, checked against the manifest.

Pure functions plus one reader: :func:`summarize_records` turns an ``(n, seq_len)`` block of token
ids into a mergeable :class:`RecordStats` with numpy operations (no per-record or per-measurement
Python); :func:`summarize_file` verifies one file against its manifest entry and reads it in blocks,
both through the data contract (``beam_pipelines.dataset``); :func:`dataset_report` builds the
``report.json`` dictionary.

The token stream needs no decoding to be counted: the dataset's tokenizer scheme surveys it by its
structure alone (``Scheme.survey``: where measurements and source addresses begin), so a malformed record
is counted, not fatal.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from beam_pipelines.dataset import iter_record_blocks, verify_file
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from tokenizer import Scheme, get_scheme

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
    token_counts: np.ndarray = None  # counts per token id (vocab_size entries; larger ids in out_of_vocab)
    out_of_vocab_tokens: int = 0
    sources: np.ndarray = None  # sorted unique source addresses (_SOURCE_DTYPE)
    vocab_size: int = 0  # ids counted one by one (the scheme's vocabulary); 0: v1's

    def __post_init__(self):
        if not self.vocab_size:
            self.vocab_size = get_scheme("v1").vocab_size
        if self.measurements_per_record is None:
            self.measurements_per_record = np.zeros(1, np.int64)
        if self.tokens_per_record is None:
            self.tokens_per_record = np.zeros(self.seq_len + 1, np.int64)
        if self.token_counts is None:
            self.token_counts = np.zeros(self.vocab_size, np.int64)
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
        self.token_counts = _add_padded(self.token_counts, other.token_counts)
        self.vocab_size = len(self.token_counts)
        self.sources = np.union1d(self.sources, other.sources)
        return self


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(len(a), len(b)), np.int64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out


def source_keys(survey) -> np.ndarray:
    """The distinct source addresses of a :class:`~tokenizer.schemes.Survey`, as sorted ``_SOURCE_DTYPE``."""
    key = np.zeros(len(survey.source_family), _SOURCE_DTYPE)
    key["family"] = survey.source_family
    key["hi"] = survey.source_key[:, 0]
    key["lo"] = survey.source_key[:, 1]
    return np.unique(key)


def summarize_records(tokens: np.ndarray, scheme: Scheme | None = None) -> RecordStats:
    """Summarize an ``(n, seq_len)`` array of token ids (records of one split) of ``scheme`` (None: v1)."""
    scheme = scheme or get_scheme("v1")
    n, seq_len = tokens.shape  # (records, seq_len)
    s = RecordStats(seq_len, vocab_size=scheme.vocab_size)
    s.records = n
    if n == 0:
        return s
    survey = scheme.survey(tokens)
    is_pad = tokens == scheme.pad_id  # (records, seq_len)
    pad = is_pad.sum(axis=1)  # (records,)
    starts = survey.measurements  # (records,)
    s.pad_tokens = int(pad.sum())
    s.tokens = n * seq_len - s.pad_tokens
    s.measurements = int(starts.sum())
    s.measurements_per_record = np.bincount(starts).astype(np.int64)
    s.tokens_per_record = np.bincount(seq_len - pad, minlength=seq_len + 1).astype(np.int64)
    # A well-formed record is whole measurements then PAD: no PAD followed by a non-PAD, and a
    # non-empty record begins as the scheme's records do.
    pad_inside = np.any(is_pad[:, :-1] & ~is_pad[:, 1:], axis=1)
    bad_start = (pad < seq_len) & ~survey.starts_ok
    s.malformed_records = int(np.count_nonzero(pad_inside | bad_start))
    counts = np.bincount(tokens.ravel())
    vocab = scheme.vocab_size
    s.token_counts[: min(len(counts), vocab)] += counts[:vocab]
    s.out_of_vocab_tokens = int(counts[vocab:].sum())
    s.sources = source_keys(survey)
    s.ipv4_measurements, s.ipv6_measurements = survey.ipv4_measurements, survey.ipv6_measurements
    return s


def summarize_file(directory: str, split: str, entry: dict, seq_len: int, tokenizer: str = "v1") -> RecordStats:
    """Verify one file of a dataset against its manifest entry (size, sha256, record count), then summarize it.

    Raises :class:`~beam_pipelines.dataset.DatasetError` (an ``InputError``) naming the file when it is
    missing, disagrees with the manifest or holds a record of the wrong length.
    """
    verify_file(directory, entry)
    scheme = get_scheme(tokenizer)
    out = RecordStats(seq_len, vocab_size=scheme.vocab_size)
    for block in iter_record_blocks(os.path.join(directory, entry["path"]), seq_len):  # (records, seq_len)
        out.merge(summarize_records(block, scheme))
    return out


def file_jobs(directory: str, manifest: dict) -> list[tuple[str, str, dict, int, str]]:
    """(directory, split, file entry, seq_len, tokenizer scheme name) for every file, in manifest order."""
    return [
        (directory, name, entry, manifest["seq_len"], get_scheme(manifest["tokenizer"]).name)
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
    scheme = get_scheme(manifest["tokenizer"])
    counts = _add_padded(total.token_counts, np.zeros(scheme.vocab_size, np.int64))[: scheme.vocab_size]
    groups = dict(scheme.token_groups)
    role_ids = np.flatnonzero(groups.pop("role_tokens", np.zeros(scheme.vocab_size, bool)))
    roles = {scheme.token_names[i]: int(counts[i]) for i in role_ids}
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
            "size": scheme.vocab_size,
            "used_ids": int(np.count_nonzero(counts)),
            "unused_ids": np.flatnonzero(counts == 0).tolist(),
            **({"roles": roles} if len(role_ids) else {}),
            **{name: int(counts[mask].sum()) for name, mask in groups.items()},  # byte_tokens, pad_tokens, ...
            "legend": scheme.legend,
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
