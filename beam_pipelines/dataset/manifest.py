"""The dataset manifest: the only proof that a pretokenized dataset is complete (see DESIGN.md).

Pure functions to build, fingerprint, write (atomically) and read it. The trainer and the stats job
read datasets through :func:`read_manifest`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence

from beam_pipelines.common.files import write_json_atomic  # noqa: F401  (re-exported for the jobs)
from tokenizer import PAD, TOKENIZER_NAME, TOKENIZER_VERSION, VOCAB_SIZE

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """A dataset directory without a valid manifest."""


def tokenizer_info() -> dict:
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


def read_manifest(directory: str) -> dict:
    """Read and minimally validate ``directory/manifest.json``; raises :class:`ManifestError`."""
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ManifestError(f"{directory}: no {MANIFEST_NAME}; not a complete pretokenized dataset")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    for key in ("format_version", "tokenizer", "seq_len", "splits", "fingerprint"):
        if key not in manifest:
            raise ManifestError(f"{path}: manifest lacks {key!r}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {manifest['format_version']}, expected {FORMAT_VERSION}")
    return manifest
