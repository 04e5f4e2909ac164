"""The dataset manifest: the only proof that a pretokenized dataset is complete (docs/data-contract.md).

The writing side (used by ``beam_pipelines.pretokenize``): :func:`tokenizer_info`, :func:`fingerprint`,
and ``write_json_atomic`` (re-exported from ``common.files``). The reading side: :func:`read_manifest`,
the one reader of ``manifest.json`` that the trainer, the evaluation, the stats job and pretokenize's own
output guard go through. It refuses an unknown ``format_version``, a manifest without the keys a reader
needs, and the ``manifest.json`` of an ``ingest_atlas`` output (another format under the same name).
Checking the listed files against it is :mod:`beam_pipelines.dataset.verify`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence

from beam_pipelines.common import storage
from beam_pipelines.common.errors import InputError
from beam_pipelines.common.files import write_json_atomic  # noqa: F401  (re-exported for the jobs)
from tokenizer import PAD, TOKENIZER_NAME, TOKENIZER_VERSION, VOCAB_SIZE

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLIT_NAMES = ("train", "val", "test")  # the splits pretokenize writes, in the order reports list them
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DatasetError(InputError):
    """A pretokenized dataset that is missing, incomplete, damaged or not what the reader expects."""


class ManifestError(DatasetError):
    """A dataset directory without a valid ``manifest.json``."""


def tokenizer_info() -> dict:
    """The manifest's ``tokenizer`` object for this code's tokenizer."""
    return {"name": TOKENIZER_NAME, "version": TOKENIZER_VERSION, "vocab_size": VOCAB_SIZE, "pad_id": PAD}


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def fingerprint(inputs: Sequence[Mapping], options: Mapping) -> str:
    """sha256 over the inputs' content hashes and sizes, the options that shape the output, and the tokenizer.

    Input paths are left out on purpose: the same bytes read from another place make the same dataset.
    """
    payload = {
        "inputs": [{"sha256": i["sha256"], "bytes": i["bytes"], "rows": i["rows"]} for i in inputs],
        "options": dict(options),
        "tokenizer": tokenizer_info(),
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


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
    splits = manifest["splits"]
    need(isinstance(splits, dict), "'splits'", "an object")
    for name, split in splits.items():
        where = f"splits.{name}"
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
            need(isinstance(entry.get("sha256"), str) and bool(_SHA256.match(entry["sha256"])), f"{at}.sha256",
                 "a sha256 hex digest")
