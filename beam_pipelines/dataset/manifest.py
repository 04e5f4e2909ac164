"""The dataset manifest: the only proof that a pretokenized dataset is complete (docs/data-contract.md).

The writing side (used by ``beam_pipelines.pretokenize``): :func:`tokenizer_info`, :func:`fingerprint`,
and ``write_json_atomic`` (re-exported from ``common.files``). The reading side: :func:`read_manifest`,
the one reader of ``manifest.json`` that the trainer, the evaluation, the stats job and pretokenize's own
output guard go through. It refuses an unknown ``format_version``, a manifest without the keys a reader
needs, and the ``manifest.json`` of an ``ingest_atlas`` output (another format under the same name).
Checking the listed files against it is :mod:`beam_pipelines.dataset.verify`.

Versions (``pretokenize --append``): a manifest lists its ``versions``, oldest first, and its top-level
keys describe the dataset at its latest version (totals over all versions). :func:`dataset_versions`
gives the list (a manifest written before versions existed reads as one version 1), and
:func:`select_version` the manifest of the dataset as it stood at one version: the files of that version
and the earlier ones, their counts, that version's fingerprint. Readers that bind to a version (a resumed
training run) go through it. The writer builds its top-level keys with the same function
(:func:`combine_versions`), so the latest version's selection is the manifest itself.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence

from beam_pipelines.common import storage
from beam_pipelines.common.errors import InputError
from beam_pipelines.common.files import write_json_atomic  # noqa: F401  (re-exported for the jobs)
from tokenizer import TOKENIZER_NAME, get_scheme

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLIT_NAMES = ("train", "val", "test")  # the splits pretokenize writes, in the order reports list them
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DatasetError(InputError):
    """A pretokenized dataset that is missing, incomplete, damaged or not what the reader expects."""


class ManifestError(DatasetError):
    """A dataset directory without a valid ``manifest.json``."""


def tokenizer_info(scheme: str = TOKENIZER_NAME) -> dict:
    """The manifest's ``tokenizer`` object for tokenizer scheme ``scheme`` (default: v1)."""
    return get_scheme(scheme).info()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def fingerprint(inputs: Sequence[Mapping], options: Mapping, scheme: str = TOKENIZER_NAME) -> str:
    """sha256 over the inputs' content hashes and sizes, the options that shape the output, and the tokenizer.

    Input paths are left out on purpose: the same bytes read from another place make the same dataset.
    """
    payload = {
        "inputs": [{"sha256": i["sha256"], "bytes": i["bytes"], "rows": i["rows"]} for i in inputs],
        "options": dict(options),
        "tokenizer": tokenizer_info(scheme),
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def version_fingerprint(previous: str, inputs: Sequence[Mapping], options: Mapping, scheme: str = TOKENIZER_NAME) -> str:
    """The fingerprint of a version > 1: sha256 over the previous version's fingerprint, this version's new
    inputs (content hashes, sizes, rows), its shaping options and the tokenizer.

    A chain, so it names the whole history: the same appends onto the same dataset give the same value,
    and version 1's fingerprint (:func:`fingerprint`) stays what it was before versions existed.
    """
    payload = {
        "previous": previous,
        "inputs": [{"sha256": i["sha256"], "bytes": i["bytes"], "rows": i["rows"]} for i in inputs],
        "options": dict(options),
        "tokenizer": tokenizer_info(scheme),
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def created_now() -> str:
    """A version's ``created`` time, UTC to the second ("2026-11-30T10:00:00Z").

    Taken from the ``SOURCE_DATE_EPOCH`` environment variable when it is set (the reproducible-builds
    convention), so two runs can write byte-identical manifests; else the clock.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        except (ValueError, OverflowError, OSError) as exc:
            raise InputError(f"SOURCE_DATE_EPOCH={epoch!r}: not a number of seconds since 1970") from exc
    else:
        when = datetime.datetime.now(datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- versions -------------------------------------------------------------------------------------

# Keys of a split that are counts, summed over versions; context_continuity is a weighted mean.
_SPLIT_COUNTS = ("records", "measurements", "tokens", "pad_tokens", "sources")
# The top-level keys a version's entry carries, and that combine_versions rebuilds from the entries.
_VERSION_KEYS = ("fingerprint", "inputs", "options", "rows", "rejected", "splits")


def dataset_versions(manifest: Mapping) -> list[dict]:
    """The manifest's ``versions`` list, oldest first (``version`` 1, 2, ...).

    A manifest written before versions existed (no ``versions`` key) reads as one version 1 made of its
    top-level keys, with ``created`` None. The entries are the manifest's own objects, not copies.
    """
    versions = manifest.get("versions")
    if versions is not None:
        return list(versions)
    entry: dict = {"version": 1, "created": None}
    for key in _VERSION_KEYS:
        if key in manifest:
            entry[key] = manifest[key]
    return [entry]


def _sum_splits(versions: Sequence[Mapping]) -> dict:
    """Per split: the versions' files in version order, counts summed, continuity weighted by measurements."""
    names: list[str] = []
    for v in versions:
        names += [n for n in v.get("splits", {}) if n not in names]
    splits = {}
    for name in names:
        parts = [v["splits"][name] for v in versions if name in v.get("splits", {})]
        split: dict = {}
        for key in _SPLIT_COUNTS:
            if all(key in p for p in parts):
                split[key] = sum(p[key] for p in parts)
        if all("context_continuity" in p for p in parts) and "measurements" in split:
            # continuity * measurements is each version's count of continued measurements (an integer), so
            # the combined value is exactly what one version holding all of them would report.
            continued = sum(
                round(p["context_continuity"] * p["measurements"]) for p in parts if p["context_continuity"] is not None
            )
            split["context_continuity"] = continued / split["measurements"] if split["measurements"] else None
        split["files"] = [dict(f) for p in parts for f in p["files"]]
        splits[name] = split
    return splits


def combine_versions(base: Mapping, versions: Sequence[Mapping]) -> dict:
    """The complete manifest of a dataset made of ``versions`` (oldest first, non-empty).

    ``base`` gives the keys that do not change across versions (``format_version``, ``tokenizer``,
    ``seq_len``, any key this code does not know). Rebuilt from the versions: ``splits`` (every version's
    files, version 1's first; counts summed), ``rows`` and ``rejected`` (summed; all versions' rejected
    files), ``inputs`` (all versions', in order), ``options`` (version 1's), ``fingerprint`` (the last
    version's), ``version`` and ``versions``.
    """
    if not versions:
        raise ValueError("a dataset has at least one version")
    out = {k: v for k, v in base.items() if k not in (*_VERSION_KEYS, "version", "versions")}
    out["splits"] = _sum_splits(versions)
    if all(isinstance(v.get("rows"), Mapping) for v in versions):
        out["rows"] = {k: sum(v["rows"].get(k, 0) for v in versions) for k in versions[0]["rows"]}
    if all(isinstance(v.get("rejected"), Mapping) for v in versions):
        by_reason: dict[str, int] = {}
        for v in versions:
            for reason, n in v["rejected"].get("by_reason", {}).items():
                by_reason[reason] = by_reason.get(reason, 0) + n
        out["rejected"] = {
            "total": sum(v["rejected"].get("total", 0) for v in versions),
            "by_reason": dict(sorted(by_reason.items())),
            "files": [f for v in versions for f in v["rejected"].get("files", [])],
        }
    if any("inputs" in v for v in versions):
        out["inputs"] = [dict(i) for v in versions for i in v.get("inputs", [])]
    if "options" in versions[0]:
        out["options"] = versions[0]["options"]
    out["fingerprint"] = versions[-1]["fingerprint"]
    out["version"] = versions[-1]["version"]
    out["versions"] = [dict(v) for v in versions]
    return out


def select_version(manifest: Mapping, version: int | None = None, *, root: str | None = None) -> dict:
    """The manifest of the dataset as it stood at ``version`` (None: the latest).

    Same shape as a complete manifest: ``splits`` with the files of versions 1..``version`` and their
    summed counts, cumulative ``rows``, ``rejected`` and ``inputs``, that version's ``fingerprint``,
    ``version`` and the ``versions`` list cut after it. Readers that bind to a version (a resumed training
    run) read exactly these files. An unknown version raises :class:`ManifestError` naming ``root`` (the
    dataset's path, for the message) and the versions that exist.
    """
    versions = dataset_versions(manifest)
    latest = versions[-1]["version"]
    if version is None:
        version = latest
    if not _is_int(version) or not 1 <= version <= latest:
        have = "version 1" if latest == 1 else f"versions 1..{latest}"
        raise ManifestError(f"{root or 'the dataset'}: no version {version!r}; it has {have}")
    return combine_versions(manifest, versions[:version])


def manifest_path(root: str) -> str:
    return os.path.join(root, MANIFEST_NAME)


def read_manifest(root: str) -> dict:
    """Read and validate ``root/manifest.json`` of a pretokenized dataset; raises :class:`ManifestError`.

    Checks the format version and the shape of everything a reader uses (tokenizer, seq_len, splits with
    their files, fingerprint); each error names the manifest's path. Does not look at the listed files
    (that is :func:`beam_pipelines.dataset.verify.verify_dataset`).
    """
    path = manifest_path(root)
    if not storage.exists(path):  # a local path, or an object-store URL (s3://, gs://)
        raise ManifestError(f"{root}: no {MANIFEST_NAME}; the dataset is missing or incomplete (run pretokenize)")
    try:
        manifest = json.loads(storage.read_bytes(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a JSON object")
    if manifest.get("job") == "ingest_atlas":
        raise ManifestError(
            f"{path}: this is an ingest_atlas output, not a pretokenized dataset; run pretokenize on it "
            f"(python -m beam_pipelines.pretokenize --input '{os.path.join(root, 'part-*.parquet')}' --output DIR)"
        )
    version = manifest.get("format_version")
    if not _is_int(version):
        raise ManifestError(f"{path}: manifest has no integer 'format_version'")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format_version {version}, but this code reads format_version {FORMAT_VERSION} only"
        )
    for key in ("tokenizer", "seq_len", "splits", "fingerprint"):
        if key not in manifest:
            raise ManifestError(f"{path}: manifest has no {key!r}")
    _check_shape(path, manifest)
    if "versions" in manifest:
        _check_versions(path, manifest)
    return manifest


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_shape(path: str, manifest: dict) -> None:
    """Types of the keys a reader relies on; raises :class:`ManifestError` naming the first bad one."""

    def need(ok: bool, where: str, what: str) -> None:
        if not ok:
            raise ManifestError(f"{path}: {where} is not {what}")

    tok = manifest["tokenizer"]
    need(isinstance(tok, dict), "'tokenizer'", "an object")
    need(isinstance(tok.get("name"), str), "tokenizer.name", "a string")
    for key in ("version", "vocab_size", "pad_id"):
        need(_is_int(tok.get(key)), f"tokenizer.{key}", "an integer")
    need(_is_int(manifest["seq_len"]) and manifest["seq_len"] > 0, "seq_len", "a positive integer")
    need(isinstance(manifest["fingerprint"], str), "'fingerprint'", "a string")
    _check_splits(path, manifest["splits"], "")


def _need(path: str, ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ManifestError(f"{path}: {where} is not {what}")


def _check_splits(path: str, splits, prefix: str) -> None:
    """The ``splits`` object (at ``prefix``: "" for the top level, "versions[i]." for a version's)."""

    def need(ok: bool, where: str, what: str) -> None:
        _need(path, ok, where, what)

    need(isinstance(splits, dict), f"'{prefix}splits'" if not prefix else f"{prefix}splits", "an object")
    for name, split in splits.items():
        where = f"{prefix}splits.{name}"
        need(isinstance(split, dict), where, "an object")
        need(_is_int(split.get("records")) and split["records"] >= 0, f"{where}.records", "a count")
        need(isinstance(split.get("files"), list), f"{where}.files", "a list")
        for i, entry in enumerate(split["files"]):
            at = f"{where}.files[{i}]"
            need(isinstance(entry, dict), at, "an object")
            rel = entry.get("path")
            need(
                isinstance(rel, str) and rel != "" and not os.path.isabs(rel) and ".." not in rel.split("/"),
                f"{at}.path",
                "a relative path inside the dataset",
            )
            for key in ("records", "bytes"):
                need(_is_int(entry.get(key)) and entry[key] >= 0, f"{at}.{key}", "a count")
            need(
                isinstance(entry.get("sha256"), str) and bool(_SHA256.match(entry["sha256"])),
                f"{at}.sha256",
                "a sha256 hex digest",
            )


def _check_versions(path: str, manifest: dict) -> None:
    """``versions``: a non-empty list numbered 1..N, each with its fingerprint and splits of the usual
    shape; the top-level ``version`` is N, the top-level fingerprint the last version's, and each split's
    top-level files are the versions' files in version order (what a reader of the latest version reads)."""
    versions = manifest["versions"]
    _need(path, isinstance(versions, list) and len(versions) > 0, "'versions'", "a non-empty list")
    for i, entry in enumerate(versions):
        at = f"versions[{i}]"
        _need(path, isinstance(entry, dict), at, "an object")
        _need(
            path,
            entry.get("version") == i + 1 and _is_int(entry.get("version")),
            f"{at}.version",
            f"{i + 1} (versions are numbered 1..N in order)",
        )
        _need(path, isinstance(entry.get("fingerprint"), str), f"{at}.fingerprint", "a string")
        _need(path, "splits" in entry, f"{at}.splits", "present")
        _check_splits(path, entry["splits"], f"{at}.")
    _need(path, manifest.get("version") == len(versions), "'version'", f"the last version's number ({len(versions)})")
    _need(
        path, manifest["fingerprint"] == versions[-1]["fingerprint"], "'fingerprint'", "the last version's fingerprint"
    )
    combined = _sum_splits(versions)
    for name, split in manifest["splits"].items():
        files = [f.get("path") for f in split["files"]]
        want = [f["path"] for f in combined.get(name, {}).get("files", [])]
        _need(path, files == want, f"splits.{name}.files", "the versions' files in version order")
