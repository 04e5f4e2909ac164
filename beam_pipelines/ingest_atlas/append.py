"""``ingest_atlas --append``: what the output already holds, and which input files are new. No Beam here.

An append reads the output's complete manifest (``_SUCCESS`` present), matches the input files against the
inputs of every version, and plans a new version made of the new files only. The rules:

* a file whose path, size and sha256 equal a converted input's is skipped (converted before);
* a file whose content (sha256 and size) equals a converted input's under another path is skipped too: it
  would give the same results a second time (a folder of dumps moved or mounted elsewhere);
* a converted path whose size or sha256 changed is refused (:class:`InputError`, exit 2), naming the file:
  a dump file changed after it was converted, and converting it again would hold its unchanged results
  twice. Give the new content a new name, or rebuild the output with ``--overwrite``;
* an output written before input hashes were recorded (no ``sha256`` in its inputs) matches its inputs by
  path and size.

Files that the manifest does not list (the shards of an append that crashed, scratch) are removed before
the new version is written: they were never part of a complete output.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence

from beam_pipelines.common import storage
from beam_pipelines.common.errors import InputError, UsageError
from beam_pipelines.common.output import LOCK_NAME
from beam_pipelines.ingest_atlas import discovery, shards

SHAPING = ("rtt", "src", "shard_rows")  # the options every version of an output shares


def read_complete(out: str) -> dict | None:
    """The manifest of the complete ingest result in ``out``, or None when ``out`` holds none (no
    ``_SUCCESS``: nothing yet, or a first run that did not finish).

    An append that was stopped between writing its manifest and rewriting ``_SUCCESS`` left a complete
    new version whose ``_SUCCESS`` names the previous fingerprint: ``_SUCCESS`` is rewritten (with a note).
    """
    success = storage.join(out, shards.SUCCESS_NAME)
    if not storage.exists(success):
        return None
    try:
        manifest = storage.read_json(storage.join(out, shards.MANIFEST_NAME))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{out} has {shards.SUCCESS_NAME} but no readable {shards.MANIFEST_NAME} ({exc}); it cannot be appended "
            "to: rebuild it with --overwrite"
        ) from exc
    if manifest.get("job") != "ingest_atlas" or "fingerprint" not in manifest:
        raise UsageError(f"{out}/{shards.MANIFEST_NAME} is not an ingest_atlas manifest; choose another --output")
    try:
        marker = storage.read_json(success)
    except (OSError, ValueError):
        marker = {}
    if marker.get("fingerprint") != manifest["fingerprint"]:
        storage.write_json(success, {"fingerprint": manifest["fingerprint"]})
        print(
            f"note: {out}: the last append wrote its manifest but not {shards.SUCCESS_NAME}; rewrote "
            f"{shards.SUCCESS_NAME} for version {manifest.get('version', 1)}",
            file=sys.stderr,
        )
    return manifest


def check_options(options: dict, manifest: dict, given: Sequence[str], out: str) -> dict:
    """The shaping options of the new version: the output's, where not given; a given one that differs
    is refused (:class:`UsageError`) naming both values."""
    recorded = manifest["options"]
    resolved = dict(options)
    for name in SHAPING:
        if name in given and options[name] != recorded[name]:
            raise UsageError(
                f"--{name} {options[name]} differs from the output's --{name} {recorded[name]} (every version of "
                f"{out} has the same); leave --{name} out or give "
                f"{recorded[name]}"
            )
        resolved[name] = recorded[name]
    return resolved


def unlisted_entries(out: str, manifest: dict, is_own: Callable[[str], bool]) -> list[str]:
    """The paths under ``out`` that the manifest does not list and this job writes (a crashed append's
    shards, temporary names, scratch). A top-level entry this job does not write is refused
    (:class:`UsageError`): an append never removes anybody else's files."""
    listed = shards.listed_files(manifest) | {shards.MANIFEST_NAME, shards.SUCCESS_NAME, LOCK_NAME}
    names = storage.listdir(out)
    foreign = sorted(n for n in names if not is_own(n) and n != LOCK_NAME)
    if foreign:
        raise UsageError(f"{out} holds files this job did not write ({foreign[:3]}); --append leaves them alone: move them")
    found = []
    for name in names:
        if name in listed:
            continue
        if name == shards.REJECTED_DIR:
            folder = storage.join(out, name)
            found.extend(
                p for p in storage.list_files(folder) if _relative(p, out) not in listed
            )
        else:
            found.append(storage.join(out, name))
    return found


def _relative(path: str, out: str) -> str:
    return path[len(out.rstrip("/")) + 1 :]


def remove(paths: Sequence[str]) -> None:
    """Remove files and folders (a crashed run's leftovers)."""
    for path in paths:
        if storage.is_remote(path):
            storage.remove(path)  # an object, or a "folder" (key prefix): either may be there
        storage.rmtree(path)  # locally a file or a folder


@dataclasses.dataclass(frozen=True)
class Selection:
    """The input files of an append: the new ones, and the ones converted before (with their version)."""

    new: tuple[str, ...]
    known: tuple[tuple[str, int], ...]  # (path, version that converted that content)


def select_new(paths: Sequence[str], manifest: dict) -> Selection:
    """Split ``paths`` into files to convert and files converted before (see the module's rules).

    Raises :class:`InputError` naming the first converted path whose size or sha256 changed.
    """
    by_path: dict[str, tuple[dict, int]] = {}
    by_content: dict[tuple[str, int], int] = {}
    for v in shards.versions(manifest):
        for entry in v["inputs"]:
            by_path[entry["path"]] = (entry, v["version"])
            if entry.get("sha256"):
                by_content[(entry["sha256"], entry["bytes"])] = v["version"]
    sizes = {p: discovery.input_size(p) for p in paths}
    for path in paths:  # a changed size needs no hash to be refused
        if path in by_path and by_path[path][0]["bytes"] != sizes[path]:
            _refuse_changed(path, *by_path[path], sizes[path], None)
    # Old outputs (no hashes recorded) match a known path by size alone; every other file is hashed.
    to_hash = [p for p in paths if p not in by_path or by_path[p][0].get("sha256")]
    hashes = discovery.hash_inputs(to_hash, sum(sizes[p] for p in to_hash))
    new, known = [], []
    for path in paths:
        if path in by_path:
            entry, version = by_path[path]
            if entry.get("sha256") and entry["sha256"] != hashes[path]:
                _refuse_changed(path, entry, version, sizes[path], hashes[path])
            known.append((path, version))
        elif (hashes[path], sizes[path]) in by_content:
            known.append((path, by_content[(hashes[path], sizes[path])]))
        else:
            new.append(path)
    return Selection(tuple(new), tuple(known))


def _refuse_changed(path: str, entry: dict, version: int, size: int, digest: str | None) -> None:
    was = f"{entry['bytes']:,} bytes" + (f", sha256 {entry['sha256'][:12]}" if entry.get("sha256") else "")
    now = f"{size:,} bytes" + (f", sha256 {digest[:12]}" if digest else "")
    raise InputError(
        f"{path}: changed after it was converted (version {version}: {was}; now {now}); --append converts a "
        "file once: give the new content a new file name, or rebuild the output with --overwrite"
    )
