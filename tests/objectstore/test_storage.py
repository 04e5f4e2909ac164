"""``beam_pipelines.common.storage`` and the output guard on S3 (moto's server), beside the same calls on
local paths: the jobs rely on both behaving alike."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.common import object_store, storage
from beam_pipelines.common.errors import UsageError
from beam_pipelines.common.output import LOCK_NAME, OutputDir


@pytest.fixture
def roots(s3, tmp_path):
    """One local folder and one S3 prefix, with the job options configured as a job would."""
    object_store.configure({"s3_endpoint_url": s3.endpoint, "s3_access_key_id": "test-key",
                            "s3_secret_access_key": "test-secret", "s3_region_name": "us-east-1"})
    bucket = s3.new_bucket()
    yield [str(tmp_path / "local"), f"s3://{bucket}/prefix"]
    object_store.configure({})


@pytest.mark.slow  # about 1 s of round trips to the server: the quick set keeps to the error paths
def test_files_behave_alike_locally_and_in_s3(roots, tmp_path):
    for root in roots:
        storage.makedirs(storage.join(root, "a"))
        storage.write_bytes(storage.join(root, "a", "x.bin"), b"12345")
        storage.write_json(storage.join(root, "b.json"), {"k": 1})
        assert storage.read_bytes(storage.join(root, "a", "x.bin")) == b"12345"
        assert storage.read_json(storage.join(root, "b.json")) == {"k": 1}
        assert storage.size(storage.join(root, "a", "x.bin")) == 5
        assert storage.exists(storage.join(root, "b.json")) and not storage.exists(storage.join(root, "nope"))
        assert storage.listdir(root) == ["a", "b.json"]
        assert storage.glob(storage.join(root, "*", "*.bin")) == [storage.join(root, "a", "x.bin")]
        storage.move(storage.join(root, "a", "x.bin"), storage.join(root, "a", "y.bin"))
        assert storage.list_files(root) == [storage.join(root, "a", "y.bin"), storage.join(root, "b.json")]
        assert storage.create_exclusive(storage.join(root, "lock"), b"me") is True
        assert storage.create_exclusive(storage.join(root, "lock"), b"you") is False  # the first one stays
        assert storage.read_bytes(storage.join(root, "lock")) == b"me"
        local = tmp_path / "big.bin"
        local.write_bytes(bytes(range(256)) * 5000)
        size, digest = storage.upload(str(local), storage.join(root, "up", "big.bin"))
        assert size == 1_280_000 and digest == storage.sha256(storage.join(root, "up", "big.bin"))
        storage.download(storage.join(root, "up", "big.bin"), str(tmp_path / "back.bin"))
        assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
        storage.remove(storage.join(root, "b.json"))
        storage.remove(storage.join(root, "b.json"))  # a missing file is fine
        storage.rmtree(root)
        assert storage.list_files(root) == [] and not storage.isdir(root)


@pytest.mark.slow
def test_output_guard_and_writer_lock_in_s3(roots, s3):
    out = roots[1]
    with OutputDir(out):
        owner = json.loads(storage.read_bytes(storage.join(out, LOCK_NAME)))
        assert set(owner) == {"host", "pid", "started"}
        with pytest.raises(UsageError, match=f"{out} is being written by another run"), OutputDir(out):
            pass
        assert storage.exists(storage.join(out, LOCK_NAME))  # the refused writer left the lock alone
    assert not storage.exists(storage.join(out, LOCK_NAME))  # removed at the end

    # A lock object left by a run on another machine is never taken over; the message names it.
    storage.write_bytes(storage.join(out, LOCK_NAME), b'{"host": "elsewhere", "pid": 1, "started": "T"}')
    with pytest.raises(UsageError, match=f"pid 1 on elsewhere, started T.*delete {out}/{LOCK_NAME}"), OutputDir(out):
        pass
    storage.remove(storage.join(out, LOCK_NAME))
    # An object named like the output is a file, not a folder.
    storage.write_bytes(out, b"x")
    with pytest.raises(UsageError, match="exists and is not a directory"), OutputDir(out):
        pass
