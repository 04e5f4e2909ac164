"""Checking a dataset's files against its manifest: the one verifier the trainer and the stats job use.

A file is checked in this order: it exists, its size is the manifest's ``bytes``, then (optionally)
its sha256 (reads the whole file) and its record count (reads the file's index). The sha256 comes
before the cheaper count because a damaged file may not open as ArrayRecord at all, and "sha256
differs" says what happened. Every error is a :class:`DatasetError` naming the file.
"""

from __future__ import annotations

import os

from beam_pipelines.common.files import sha256_file
from beam_pipelines.dataset.manifest import DatasetError
from beam_pipelines.dataset.records import count_records


def verify_file(root: str, entry: dict, *, checksum: bool = True, records: bool = True) -> int | None:
    """Check one file entry (``path``, ``bytes``, ``sha256``, ``records``) of a read manifest.

    Returns the file's record count when ``records`` (else None); raises :class:`DatasetError`.
    """
    path = os.path.join(root, entry["path"])
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: listed in the manifest but missing")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        raise DatasetError(f"{path}: has {size:,} bytes, the manifest says {entry['bytes']:,}")
    if checksum and sha256_file(path) != entry["sha256"]:
        raise DatasetError(f"{path}: sha256 differs from the manifest; the file was changed or damaged")
    if not records:
        return None
    found = count_records(path)
    if found != entry["records"]:
        raise DatasetError(f"{path}: holds {found:,} records, the manifest says {entry['records']:,}")
    return found


def verify_dataset(root: str, manifest: dict, *, checksums: bool = False) -> None:
    """Check every file of every split, and that each split's files add up to the split's ``records``.

    ``checksums`` adds the sha256 of every file (reads all the bytes; sizes and record counts are always
    checked, which costs a stat and a footer read per file).
    """
    for name, split in manifest["splits"].items():
        total = sum(verify_file(root, entry, checksum=checksums) for entry in split["files"])
        if total != split["records"]:
            raise DatasetError(
                f"{root}: split {name} files hold {total:,} records but the manifest says {split['records']:,}"
            )
