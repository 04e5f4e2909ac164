"""The output directory of a job: one writer at a time, and never anybody else's files.

Every job that writes a directory enters it through :class:`OutputDir`, which, in this order:

1. refuses an ``--output`` that is a file, and creates the directory;
2. takes the writer lock (:class:`WriterLock`): a file created atomically in the directory, naming its
   owner. While it exists a second writer is refused at once, before it reads its inputs or removes
   anything; a lock left by a run that died on this host is taken over with a note;
3. (:meth:`OutputDir.prepare`, once the job has planned) applies the job's :class:`OutputRules`: a
   complete output is skipped or refused (the job decides), a directory holding entries the job does not
   write is refused unless ``--overwrite``, the files that make the directory a complete output go first
   (from then on nothing in it passes for complete), and then the job's other entries from an earlier run;
4. on leaving, whatever happened, removes the lock, so a finished output holds exactly what the job wrote.

An ``--output`` may be an object-store URL (``s3://``, ``gs://``): entering first checks that the bucket
exists and is reachable with the credentials at hand (:func:`~beam_pipelines.common.storage.check_location`,
exit 2); there are no folders to create, and the lock is an object created with a conditional write
(:func:`~beam_pipelines.common.storage.create_exclusive`: ``If-None-Match: *`` on S3, the precondition
``ifGenerationMatch=0`` on GCS: the store lets exactly one writer create it), holding its owner and
start time. An owner on another machine cannot be checked, so such a lock is never taken over: the message
names it and says to delete it if that run is gone.

No Apache Beam import here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable

from beam_pipelines.common import object_store, storage
from beam_pipelines.common.errors import UsageError

LOCK_NAME = "_writer.lock"


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who holds a writer lock."""

    host: str
    pid: int
    started: str  # ISO 8601, UTC, to the second

    @classmethod
    def me(cls) -> Owner:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return cls(host=socket.gethostname(), pid=os.getpid(), started=now)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"

    def is_gone(self) -> bool:
        """True only when the owner certainly died: same host and no such process."""
        if self.host != socket.gethostname():
            return False  # another machine's processes cannot be checked from here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False


class WriterLock:
    """``DIR/_writer.lock``: created with ``O_CREAT | O_EXCL`` (a conditional write in an object store), so
    exactly one writer gets it.

    :meth:`acquire` raises :class:`UsageError` naming the directory and the owner while another writer
    holds it; it takes over a lock whose owner is gone (same host, dead pid) and returns a note saying
    so. :meth:`release` removes the file.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = storage.join(directory, LOCK_NAME)
        self._held = False

    def acquire(self) -> str | None:
        note = None
        for _ in range(3):  # a lock may vanish or be taken over between our attempts
            if self._try_create():
                return note
            text = self._read()
            owner = _parse_owner(text)
            if owner is None and text is not None:
                # Created but not yet written (microseconds), or damaged: never guess that it is stale.
                raise UsageError(
                    f"{self.directory} is locked by another writer ({self.path} gives no owner); if no "
                    f"other run writes there, delete {self.path} and run again"
                )
            if owner is not None and not owner.is_gone():
                raise UsageError(
                    f"{self.directory} is being written by another run ({owner}); wait for it to finish, "
                    f"or choose another --output (if that run is gone, delete {self.path})"
                )
            if owner is not None:
                # Re-read right before removing, so a lock that another writer just took over stays.
                if self._read() == text:
                    storage.remove(self.path)
                note = f"note: took over the writer lock of a run that is gone ({owner})"
        raise UsageError(f"{self.directory}: could not take the writer lock {self.path}; another run is starting")

    def _try_create(self) -> bool:
        if not storage.create_exclusive(self.path, (json.dumps(dataclasses.asdict(Owner.me())) + "\n").encode()):
            return False
        self._held = True
        return True

    def _read(self) -> str | None:
        try:
            return storage.read_bytes(self.path).decode()
        except FileNotFoundError:
            return None
        except OSError:
            if not storage.exists(self.path):  # an object store says "not found" in its own words
                return None
            raise

    def release(self) -> None:
        """Remove the lock file (only if this object took it)."""
        if self._held:
            storage.remove(self.path)
            self._held = False

    def __enter__(self) -> WriterLock:
        note = self.acquire()
        if note:
            print(note, file=sys.stderr)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _parse_owner(text: str | None) -> Owner | None:
    if not text:
        return None
    try:
        d = json.loads(text)
        return Owner(host=str(d["host"]), pid=int(d["pid"]), started=str(d["started"]))
    except (ValueError, KeyError, TypeError):
        return None


@dataclasses.dataclass(frozen=True)
class OutputRules:
    """What a job writes to its output directory, and what it does with an earlier output found there.

    ``is_own(name)``: a top-level entry this job writes (its lock aside). ``markers``: the files that make
    the directory a complete output, removed first, in this order, when it is rewritten; the first one
    says that the directory holds a complete output. ``complete(overwrite)``: called when it does;
    returns a message when the job has nothing to do, raises :class:`UsageError` to refuse, or returns
    None to rewrite. ``foreign``: the refusal of a directory holding other entries, formatted with
    ``out`` and ``names`` (the first three).
    """

    is_own: Callable[[str], bool]
    markers: tuple[str, ...]
    complete: Callable[[bool], str | None]
    foreign: str


class OutputDir:
    """The guard of a job's output directory, entered before the job reads its inputs.

    Entering refuses an ``--output`` that is a file, creates the directory and takes the writer lock
    (:class:`UsageError`, exit 2, while another writer holds it); :meth:`prepare` then applies the job's
    :class:`OutputRules`. Leaving removes the lock, and the directory too when entering created it and
    nothing was written to it (bad input found after the lock was taken leaves no trace).
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = WriterLock(path)
        self._created: list[str] = []  # the folders entering created, deepest first

    def __enter__(self) -> OutputDir:
        if storage.is_remote(self.path):
            if not object_store.key_of(self.path).strip("/"):
                raise UsageError(f"--output {self.path}: name a folder inside the bucket (e.g. {self.path.rstrip('/')}/out)")
            storage.check_location(self.path)  # no bucket, no credentials, access denied: exit 2, nothing written
            if storage.exists(self.path.rstrip("/")):
                raise UsageError(f"--output {self.path} exists and is not a directory")
            self._lock.__enter__()
            return self
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise UsageError(f"--output {self.path} exists and is not a directory")
        folder = os.path.abspath(self.path)
        while not os.path.exists(folder):
            self._created.append(folder)
            folder = os.path.dirname(folder)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--output {self.path}: {exc.strerror or exc}") from exc
        try:
            self._lock.__enter__()
        except BaseException:
            self._remove_if_created_and_empty()
            raise
        return self

    def prepare(self, rules: OutputRules, overwrite: bool = False) -> str | None:
        """Apply ``rules`` (see the module's docstring): returns the job's "nothing to do" message, or None
        once the directory is ready to be written; raises :class:`UsageError` before removing anything."""
        return _prepare(self.path, rules, overwrite)

    def __exit__(self, *exc) -> None:
        self._lock.release()
        self._remove_if_created_and_empty()

    def _remove_if_created_and_empty(self) -> None:
        if storage.is_remote(self.path):
            return  # an object store has no folders: a prefix with nothing under it is no trace
        for folder in self._created:
            try:
                os.rmdir(folder)
            except OSError:  # not empty: the job wrote there
                break


def _prepare(out: str, rules: OutputRules, overwrite: bool) -> str | None:
    """Apply ``rules`` to ``out`` (a local folder, or a key prefix in an object store: the same rules)."""
    if storage.exists(storage.join(out, rules.markers[0])):
        skip = rules.complete(overwrite)
        if skip:
            return skip
    entries = [n for n in storage.listdir(out) if n != LOCK_NAME]
    foreign = sorted(n for n in entries if not rules.is_own(n))
    if foreign and not overwrite:
        raise UsageError(rules.foreign.format(out=out, names=foreign[:3]))
    for name in rules.markers:  # from here on, nothing in DIR passes for a complete output
        storage.remove(storage.join(out, name))
    for name in sorted(set(entries) - set(foreign) - set(rules.markers)):
        _remove_entry(storage.join(out, name))
    return None


def _remove_entry(path: str) -> None:
    """Delete one top-level entry of an output, a file or a folder (in a store: an object or a prefix)."""
    if storage.is_remote(path):
        storage.remove(path)
        storage.rmtree(path)
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # not storage.rmtree: a folder that cannot be removed here is an error
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
