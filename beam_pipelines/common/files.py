"""Small file helpers shared by the jobs and the trainer: content hashes and atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
import os


def sha256_file(path: str) -> str:
    """sha256 hex digest of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: str, obj) -> None:
    """Write JSON to a temporary name, fsync, then rename: readers see all of it or nothing."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
