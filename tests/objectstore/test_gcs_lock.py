"""The writer lock on ``gs://`` is created only if absent *at the store*: gcsfs's conditional upload
(``ifGenerationMatch=0``), so of writers starting together exactly one wins.

Against :class:`tests.objectstore.gcs_server.FakeGcs`, a loopback server implementing the GCS JSON API
calls the lock makes, with the precondition (see its docstring for why it is not an emulator from PyPI);
the client is the real gcsfs, configured the standard way (``STORAGE_EMULATOR_HOST``). This tests the
request logic, not Google's service.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading

import pytest

from beam_pipelines.common import object_store, storage
from beam_pipelines.common.errors import InputError, UsageError
from beam_pipelines.common.output import LOCK_NAME, OutputDir
from tests.objectstore.gcs_server import FakeGcs

pytest.importorskip("gcsfs", reason="gs:// needs gcsfs (the gcp extra)")

WRITERS = 6


@pytest.fixture
def gcs(monkeypatch):
    with FakeGcs(buckets=("bucket",), upload_delay=0.1) as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
        object_store.configure({})
        yield server


def _race(n: int, attempt) -> list:
    """``attempt(i)`` in ``n`` threads released together; their results in order."""
    barrier = threading.Barrier(n)

    def go(i):
        barrier.wait()
        return attempt(i)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_exactly_one_of_concurrent_writers_creates_the_lock(gcs):
    path = "gs://bucket/out/_writer.lock"
    won = _race(WRITERS, lambda i: storage.create_exclusive(path, f"writer {i}".encode()))
    assert won.count(True) == 1, won
    winner = won.index(True)
    assert storage.read_bytes(path) == f"writer {winner}".encode()  # the losers overwrote nothing
    uploads = [q for m, q in gcs.requests if m == "POST"]
    assert len(uploads) == WRITERS and all("ifGenerationMatch=0" in q for q in uploads)
    assert storage.create_exclusive(path, b"late") is False  # an existing lock, met later
    storage.remove(path)
    assert storage.create_exclusive(path, b"after") is True  # gone: the next writer gets it


def test_the_race_is_real_without_the_precondition(gcs):
    """Check-then-write (the old best effort on gs://) against the same server: several writers all believe
    they created the lock, which is what the precondition prevents."""
    path = "gs://bucket/out/_writer.lock"
    fs = object_store.filesystem(path)

    def check_then_write(i):
        if fs.exists(path):
            return False
        fs.pipe_file(path, f"writer {i}".encode())
        return True

    assert _race(WRITERS, check_then_write).count(True) > 1


def test_output_guard_on_gs(gcs):
    out = "gs://bucket/ds"
    with OutputDir(out):
        owner = json.loads(storage.read_bytes(f"{out}/{LOCK_NAME}"))
        assert set(owner) == {"host", "pid", "started"}
        with pytest.raises(UsageError, match=f"{out} is being written by another run"), OutputDir(out):
            pass
        assert storage.exists(f"{out}/{LOCK_NAME}")  # the refused writer left the lock alone
    assert not storage.exists(f"{out}/{LOCK_NAME}")  # removed at the end
    assert [k for _, k in gcs.objects] == []


def test_no_credentials_for_gs_is_one_clear_error(monkeypatch, tmp_path):
    """Without an emulator, gs:// needs application-default credentials; none is one InputError naming the
    URL (gcsfs alone would fall back to anonymous access and fail later, less clearly)."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    object_store.configure({})
    with pytest.raises(InputError, match=r"^gs://bucket/ds: no credentials for gs://"):
        storage.check_location("gs://bucket/ds")
