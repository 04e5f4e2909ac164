"""The checksum cache: the sha256 check of a dataset's files once per dataset and host.

:func:`trainer.data.open_dataset` checks every file's size and record count on every start; the sha256
of every file reads every byte, so it runs once per dataset and host and is remembered here.
"""

from __future__ import annotations

import json
import os
import time

from beam_pipelines.common.files import atomic_path


class ChecksumCache:
    """Datasets whose sha256 check passed on this host, so that the check runs once per dataset and host.

    One small JSON file (``$PING_LLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ping-llm``, else
    ``~/.cache/ping-llm``; ``verified-datasets.json``) maps the dataset's real path and fingerprint to
    every file's size and modification time when it was checked: a file written since (a flipped
    byte changes its mtime) is checked again. An unwritable cache only means checking every time.
    """

    FILE = "verified-datasets.json"
    KEEP = 64  # entries kept (newest)

    def __init__(self, directory: str | None = None):
        if directory is None:
            directory = os.environ.get("PING_LLM_CACHE_DIR") or os.path.join(
                os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ping-llm"
            )
        self.path = os.path.join(directory, self.FILE)

    @staticmethod
    def _key(root: str, manifest: dict) -> str:
        return f"{os.path.realpath(root)}|{manifest['fingerprint']}"

    @staticmethod
    def _stamp(root: str, manifest: dict) -> list | None:
        stamp = []
        for split in sorted(manifest["splits"]):
            for entry in manifest["splits"][split]["files"]:
                try:
                    st = os.stat(os.path.join(root, entry["path"]))
                except OSError:
                    return None
                stamp.append([entry["path"], entry["sha256"], st.st_size, st.st_mtime_ns])
        return stamp

    def _load(self) -> dict:
        try:
            with open(self.path) as f:
                entries = json.load(f)
            return entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            return {}

    def verified(self, root: str, manifest: dict) -> bool:
        """Whether these files, unchanged since, passed the sha256 check on this host."""
        stamp = self._stamp(root, manifest)
        return stamp is not None and self._load().get(self._key(root, manifest), {}).get("files") == stamp

    def remember(self, root: str, manifest: dict) -> None:
        """Record that the files passed (best effort)."""
        stamp = self._stamp(root, manifest)
        if stamp is None:
            return
        entries = self._load()
        entries.pop(self._key(root, manifest), None)
        entries[self._key(root, manifest)] = {"files": stamp, "checked": time.time()}
        entries = dict(list(entries.items())[-self.KEEP :])
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with atomic_path(self.path) as tmp, open(tmp, "w") as f:
                json.dump(entries, f)
        except OSError:
            pass
