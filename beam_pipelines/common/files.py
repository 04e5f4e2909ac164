"""Small file helpers shared by the jobs and the trainer: content hashes and atomic writes.

No Apache Beam import here: the trainer uses this module too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator


def sha256_file(path: str) -> str:
    """sha256 hex digest of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary name beside ``path`` to write to; on success it is renamed to ``path``.

    Readers see the whole file or none of it. If the block raises, the temporary file is removed and
    ``path`` is left as it was.
    """
    tmp = f"{path}.tmp"
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_json_atomic(path: str, obj) -> None:
    """Write JSON (sorted keys, indented) to a temporary name, fsync, then rename into place."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
