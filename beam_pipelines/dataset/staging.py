"""Staging a dataset that lives in an object store (``s3://``, ``gs://``) into a local cache, verified.

Readers of a dataset (the trainer, evaluate, predict, ``stats --dataset``) read ArrayRecord files by
record index, which ArrayRecord's reader does on local files only; so a remote dataset is copied once to
``CACHE_DIR/datasets/<fingerprint>/`` and read from there. Every file is checked against the manifest
(size and sha256) as it arrives; the manifest is written last and the folder gets its final name only
when complete, so a cache folder that exists is a complete, verified copy. A second run with the same
dataset (same fingerprint) finds it and downloads nothing; another version of the dataset (another
fingerprint) gets a folder of its own.

A dataset with several versions (``pretokenize --append``) is staged one version at a time: the files of
versions 1..N only, in ``CACHE_DIR/datasets/<fingerprint of version N>/``, with the manifest of version N
(:func:`~beam_pipelines.dataset.manifest.select_version`; the remote manifest's own bytes when N is its
latest version). So a run bound to version 1 neither downloads nor waits for files appended after it, and
an append during the copy does not disturb it (the files of version N never change).

The files are read through :mod:`beam_pipelines.common.storage`, which reads object stores through
fsspec (s3fs for ``s3://``, gcsfs for ``gs://``): Apache Beam is never imported, so the trainer and the
evaluation stage a remote dataset without it. A local ``data_dir`` is returned as it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import uuid

from beam_pipelines.common import storage
from beam_pipelines.common.files import write_json_atomic
from beam_pipelines.dataset.manifest import MANIFEST_NAME, DatasetError, ManifestError, read_manifest, select_version

STAGED_MARKER = ".staged"  # written after the manifest: the copy is complete (besides the folder's name)


def default_cache_dir() -> str:
    """``$PING_LLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ping-llm``, else ``~/.cache/ping-llm``."""
    return os.environ.get("PING_LLM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ping-llm"
    )


def stage_dataset(root: str, cache_dir: str | None = None, *, quiet: bool = False, version: int | None = None) -> str:
    """The local folder to read the dataset ``root`` from: ``root`` itself when it is local, else a
    verified copy in ``cache_dir`` (default :func:`default_cache_dir`), made now or found from earlier,
    of ``version`` (None or 0: the latest) and nothing after it.

    Raises :class:`~beam_pipelines.dataset.manifest.ManifestError` when ``root`` holds no valid
    manifest or no such version, :class:`DatasetError` naming the URL when a file is missing or
    disagrees with the manifest (size, sha256), and :class:`~beam_pipelines.common.errors.InputError`
    for a bucket that does not exist, missing credentials or access denied.
    """
    if not storage.is_remote(root):
        return root
    storage.check_location(root)
    manifest = select_version(read_manifest(root), version or None, root=root)
    target = os.path.join(cache_dir or default_cache_dir(), "datasets", manifest["fingerprint"])
    if os.path.isfile(os.path.join(target, STAGED_MARKER)):
        if not quiet:
            print(f"[staging] {root}: using the verified local copy {target}", file=sys.stderr)
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"  # private to this process: concurrent stagers never meet
    try:
        files = [entry for split in manifest["splits"].values() for entry in split["files"]]
        total = sum(int(e["bytes"]) for e in files)
        if not quiet:
            print(f"[staging] {root}: copying {len(files)} file(s), {total:,} bytes, to {target}", file=sys.stderr)
        for entry in files:
            _fetch(root, entry, partial)
        with open(os.path.join(partial, MANIFEST_NAME), "wb") as f:  # last: the copy is complete
            f.write(storage.read_bytes(storage.join(root, MANIFEST_NAME)))  # read again: an append may have landed
        remote = read_manifest(partial)
        try:
            again = select_version(remote, manifest["version"], root=root)["fingerprint"]
        except ManifestError:  # that version is gone: the dataset was rebuilt meanwhile
            again = None
        if again != manifest["fingerprint"]:
            raise DatasetError(f"{root}: the dataset changed while it was being copied; run again")
        if remote["fingerprint"] != manifest["fingerprint"]:
            # An earlier version than the remote's latest: the copy holds that version's files only, so its
            # manifest is that version's (the remote's own bytes otherwise, so a copy of the latest is exact).
            write_json_atomic(os.path.join(partial, MANIFEST_NAME), manifest)
        open(os.path.join(partial, STAGED_MARKER), "w").close()
        try:
            os.rename(partial, target)
        except OSError:
            if not os.path.isfile(os.path.join(target, STAGED_MARKER)):
                raise
            # Another process staged the same dataset meanwhile: its copy is as good as ours.
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _fetch(root: str, entry: dict, partial: str) -> None:
    """Copy one listed file and check it against its manifest entry (size, then sha256)."""
    url = storage.join(root, entry["path"])
    local = os.path.join(partial, entry["path"])
    os.makedirs(os.path.dirname(local), exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with storage.open_read(url) as src, open(local, "wb") as dst:
            for chunk in iter(lambda: src.read(storage.CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
    except FileNotFoundError as exc:
        raise DatasetError(f"{url}: listed in the manifest but missing") from exc
    except OSError as exc:
        if not storage.exists(url):
            raise DatasetError(f"{url}: listed in the manifest but missing") from exc
        raise
    if size != entry["bytes"]:
        raise DatasetError(f"{url}: has {size:,} bytes, the manifest says {entry['bytes']:,}")
    if digest.hexdigest() != entry["sha256"]:
        raise DatasetError(f"{url}: sha256 differs from the manifest; the file was changed or damaged")
