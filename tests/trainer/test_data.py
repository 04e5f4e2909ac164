"""The Grain input pipeline (trainer/data.py): manifest checks, shift, masking, shuffling, sharding, state."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import grain
import numpy as np
import pytest

from tests.trainer.helpers import make_config
from tokenizer import PAD
from trainer import data
from trainer.config import load_config


def _hashes(tokens: np.ndarray) -> list[str]:
    return [hashlib.sha1(row.astype("<u2").tobytes()).hexdigest() for row in tokens]


def _split_hashes(ds: data.Dataset, split: str) -> list[str]:
    source = grain.sources.ArrayRecordDataSource(ds.files(split))
    return [hashlib.sha1(source[i]).hexdigest() for i in range(len(source))]


def _edit_manifest(root, edit) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _entries(manifest, split: str, i: int) -> list[dict]:
    """The ``i``-th file entry of ``split`` at the top level and in the version that lists it (the manifest
    stays consistent: readers of an earlier version read the versions' entries)."""
    entry = manifest["splits"][split]["files"][i]
    return [entry] + [f for v in manifest.get("versions", []) for f in v["splits"].get(split, {}).get("files", [])
                      if f["path"] == entry["path"]]


def test_opens_the_pretokenized_sample(sample_dataset):
    ds = data.open_dataset(str(sample_dataset), make_config(sample_dataset), verify_checksums=True)
    assert set(ds.split_names()) == {"train", "val", "test"}
    assert ds.seq_len == 1024 and ds.pad_id == PAD
    assert ds.num_records("train") > 1000 and len(ds.fingerprint) == 64


def test_targets_are_inputs_shifted_by_one_on_real_batches(sample_dataset):
    config = make_config(sample_dataset, "batch_size=8", "augment=false", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    iterator = data.train_iterator(ds, config)
    records = set(_split_hashes(ds, "train"))
    for _ in range(3):
        batch = next(iterator)
        inputs, targets = batch["inputs"], batch["targets"]
        assert inputs.shape == targets.shape == (8, 1024) and inputs.dtype == np.int32
        assert np.array_equal(targets[:, :-1], inputs[:, 1:])  # the shift
        assert np.all(targets[:, -1] == PAD)
        assert not np.array_equal(targets, inputs)
        # Without augmentation the inputs are the records on disk, unchanged.
        assert set(_hashes(inputs.astype(np.uint16))) <= records


def test_shift_holds_with_augmentation_too(sample_dataset):
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    batch = next(data.train_iterator(data.open_dataset(str(sample_dataset), config), config))
    assert np.array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])


def test_pad_targets_get_weight_zero(sample_dataset):
    config = make_config(sample_dataset, "batch_size=16", "augment=false", "num_workers=0")
    batch = next(data.train_iterator(data.open_dataset(str(sample_dataset), config), config))
    assert np.array_equal(batch["weights"], (batch["targets"] != PAD).astype(np.float32))
    assert (batch["weights"] == 0).any() and (batch["weights"] == 1).any()
    # A hand-made record: 3 real tokens then PAD -> exactly the first two targets count.
    tokens = np.full((1, 6), PAD, dtype=np.uint16)
    tokens[0, :3] = [0, 1, 3]
    example = data.make_example(tokens, PAD)
    assert example["targets"].tolist() == [[1, 3, PAD, PAD, PAD, PAD]]
    assert example["weights"].tolist() == [[1, 1, 0, 0, 0, 0]]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["tokenizer"].update(name="v2"), "tokenizer name"),
        (lambda m: m["tokenizer"].update(version=2), "tokenizer version"),
        (lambda m: m["tokenizer"].update(vocab_size=300), "tokenizer vocab_size"),
        (lambda m: m["tokenizer"].update(pad_id=0), "tokenizer pad_id"),
        (lambda m: m.update(seq_len=512), "seq_len is 512"),
        (lambda m: m["splits"]["train"]["files"][0].update(records=1 + m["splits"]["train"]["records"]), "holds"),
        (lambda m: [e.update(path="val/missing.array_record") for e in _entries(m, "val", 0)], "missing"),
        (lambda m: m.pop("fingerprint"), "no 'fingerprint'"),
        (lambda m: m.update(format_version=2), "format_version 2, but this code reads format_version 1 only"),
        (lambda m: m["splits"]["val"]["files"][0].update(bytes=1), "has [0-9,]+ bytes, the manifest says 1"),
    ],
)
def test_manifest_disagreements_are_refused(dataset_copy, edit, message):
    _edit_manifest(dataset_copy, edit)
    with pytest.raises(data.DatasetError, match=message):
        data.open_dataset(str(dataset_copy), make_config(dataset_copy))


def test_config_disagreements_are_refused(sample_dataset):
    with pytest.raises(data.DatasetError, match="seq_len"):
        data.open_dataset(str(sample_dataset), make_config(sample_dataset, "seq_len=512"))
    with pytest.raises(data.DatasetError, match="vocab_size"):
        data.open_dataset(str(sample_dataset), make_config(sample_dataset, "model.vocab_size=300"))


def test_missing_manifest_and_bad_checksum_are_refused(dataset_copy, tmp_path):
    with pytest.raises(data.DatasetError, match="no manifest.json"):
        data.open_dataset(str(tmp_path / "nowhere"), load_config("tiny"))
    _edit_manifest(dataset_copy, lambda m: m["splits"]["test"]["files"][0].update(sha256="0" * 64))
    data.open_dataset(str(dataset_copy), make_config(dataset_copy, "verify_checksums=false"))  # turned off
    with pytest.raises(data.DatasetError, match="sha256"):
        data.open_dataset(str(dataset_copy), make_config(dataset_copy))  # on by default


def test_dataset_errors_are_the_contracts_input_errors():
    import beam_pipelines.dataset
    from beam_pipelines.common.errors import InputError, exit_code

    assert data.DatasetError is beam_pipelines.dataset.DatasetError
    assert issubclass(data.DatasetError, InputError) and exit_code(data.DatasetError("x")) == 2


def test_importing_the_trainer_does_not_import_beam(repo_root):
    code = (
        "import sys, trainer.data, trainer.train, trainer.eval.evaluate, trainer.eval.predict, beam_pipelines.dataset; "
        "assert 'apache_beam' not in sys.modules, sorted(m for m in sys.modules if m.startswith('apache_beam'))[:5]"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _epoch_hashes(ds, config, process_index=0, process_count=1, epochs=2) -> list[list[str]]:
    stream = data.train_dataset(
        ds, config.train_split, batch_size=1, seed=config.seed, augment_fields=False,
        process_index=process_index, process_count=process_count,
    )
    per_host = ds.num_records(config.train_split) // process_count
    hashes = [_hashes(stream[i])[0] for i in range(epochs * per_host)]  # (1, L) uint16 token batches
    return [hashes[e * per_host : (e + 1) * per_host] for e in range(epochs)]


def test_global_shuffle_gives_a_new_order_each_epoch(sample_dataset):
    config = make_config(sample_dataset, "train_split=val", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    first, second = _epoch_hashes(ds, config)
    on_disk = _split_hashes(ds, "val")
    assert sorted(first) == sorted(second) == sorted(on_disk)  # each epoch reads every record once
    assert first != on_disk and second != first  # shuffled, and differently each epoch
    again, _ = _epoch_hashes(ds, config)
    assert again == first  # deterministic for the seed
    other_seed, _ = _epoch_hashes(ds, make_config(sample_dataset, "train_split=val", "seed=1", "num_workers=0"))
    assert other_seed != first


def test_hosts_read_disjoint_parts(sample_dataset):
    config = make_config(sample_dataset, "train_split=val", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    parts = [set(sum(_epoch_hashes(ds, config, i, 3, epochs=2), [])) for i in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not parts[i] & parts[j]
    n = ds.num_records("val")
    assert sum(len(p) for p in parts) == n - n % 3


def test_per_host_batches_and_global_read_indices(sample_dataset):
    config = make_config(sample_dataset, "batch_size=8", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    a = data.train_iterator(ds, config, process_index=0, process_count=2)
    b = data.train_iterator(ds, config, process_index=1, process_count=2)
    batch_a, batch_b = next(a), next(b)
    assert batch_a["inputs"].shape == (4, 1024)
    assert not set(_hashes(batch_a["inputs"].astype(np.uint16))) & set(_hashes(batch_b["inputs"].astype(np.uint16)))


@pytest.mark.parametrize("workers, bound", [(0, 200), pytest.param(2, 400, marks=pytest.mark.slow)])
def test_iterator_state_is_small_and_resumes_exactly(sample_dataset, workers, bound):
    config = make_config(sample_dataset, "batch_size=4", f"num_workers={workers}")
    ds = data.open_dataset(str(sample_dataset), config)
    iterator = data.train_iterator(ds, config)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    assert len(json.dumps(state)) < bound  # threads: the next index; processes: each worker's next index
    expected = [next(iterator) for _ in range(2)]
    resumed = data.train_iterator(ds, config)
    resumed.set_state(json.loads(json.dumps(state)))
    try:
        for want in expected:
            got = next(resumed)
            for key in want:
                assert np.array_equal(got[key], want[key])
    finally:
        for it in (iterator, resumed):
            if hasattr(it, "close"):
                it.close()


@pytest.mark.slow
def test_multiprocess_prefetch_gives_the_same_batches_and_resumes(sample_dataset):
    threads = make_config(sample_dataset, "batch_size=4")
    procs = make_config(sample_dataset, "batch_size=4", "num_workers=2")
    ds = data.open_dataset(str(sample_dataset), threads)
    ref = data.train_iterator(ds, threads)
    want = [next(ref) for _ in range(4)]
    it = data.train_iterator(ds, procs)
    try:
        got = [next(it) for _ in range(3)]
        state = json.loads(json.dumps(it.get_state()))
    finally:
        it.close()
    resumed = data.train_iterator(ds, procs)
    try:
        resumed.set_state(state)
        got.append(next(resumed))
    finally:
        resumed.close()
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g["inputs"], w["inputs"])


def test_eval_batches_cover_the_split_with_kinds(sample_dataset):
    config = make_config(sample_dataset)
    ds = data.open_dataset(str(sample_dataset), config)
    batches = list(data.eval_batches(ds, "val", batch_size=64))
    n = ds.num_records("val")
    assert len(batches) == -(-n // 64)
    assert all(b["inputs"].shape == (64, 1024) for b in batches)
    real_rows = sum(int((b["weights"].sum(axis=1) > 0).sum()) for b in batches)
    assert real_rows == n
    kinds = np.concatenate([b["kinds"].ravel() for b in batches])
    weights = np.concatenate([b["weights"].ravel() for b in batches])
    assert np.all((kinds >= 0) == (weights > 0))
    assert len(list(data.eval_batches(ds, "val", batch_size=8, max_batches=3))) == 3


# ---- start-up check: sizes and counts always, sha256 once per dataset and host


def _count_sha256(monkeypatch) -> list[str]:
    from beam_pipelines.dataset import verify

    calls: list[str] = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda path: calls.append(path) or real(path))
    return calls


def test_sha256_runs_once_per_dataset_and_host(dataset_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("PING_LLM_CACHE_DIR", str(tmp_path / "cache"))
    calls = _count_sha256(monkeypatch)
    config = make_config(dataset_copy)
    data.open_dataset(str(dataset_copy), config)
    assert len(calls) == 3  # one file per split in the sample
    data.open_dataset(str(dataset_copy), config)
    assert len(calls) == 3  # remembered
    assert (tmp_path / "cache" / data.ChecksumCache.FILE).is_file()
    data.open_dataset(str(dataset_copy), make_config(dataset_copy, "checksum_cache=false"))
    assert len(calls) == 6  # not remembered when turned off
    data.open_dataset(str(dataset_copy), make_config(dataset_copy, "verify_checksums=false"))
    assert len(calls) == 6
    # A file written since the check (same size, one byte changed) is checked again, and refused.
    val = dataset_copy / "val" / "val-00000-of-00001.array_record"
    raw = bytearray(val.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    val.write_bytes(bytes(raw))
    with pytest.raises(data.DatasetError, match=r"val-00000-of-00001.array_record: sha256 differs"):
        data.open_dataset(str(dataset_copy), config)


def test_an_unwritable_checksum_cache_only_means_checking_every_time(dataset_copy, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PING_LLM_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be created
    calls = _count_sha256(monkeypatch)
    for _ in range(2):
        data.open_dataset(str(dataset_copy), make_config(dataset_copy))
    assert len(calls) == 6


# ---- a damaged data file met while training


def _damage(path) -> int:
    """Flip one byte in the middle of ``path``; returns the record that no longer reads."""
    from array_record.python.array_record_module import ArrayRecordReader

    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
    bad = []
    for i in range(reader.num_records()):
        try:
            reader.read([i])
        except Exception:  # noqa: BLE001 - riegeli's error
            bad.append(i)
    assert len(bad) == 1, bad
    return bad[0]


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_a_damaged_file_names_the_file_and_record(dataset_copy, workers):
    val = dataset_copy / "val" / "val-00000-of-00001.array_record"
    bad = _damage(val)
    config = make_config(dataset_copy, "train_split=val", "batch_size=64", f"num_workers={workers}",
                         "verify_checksums=false")
    ds = data.open_dataset(str(dataset_copy), config)  # sizes and record counts still agree
    iterator = data.train_iterator(ds, config)
    try:
        with pytest.raises(data.DataReadError) as err:
            for _ in range(ds.num_records("val") // 64 + 1):  # one epoch touches every record
                next(iterator)
    finally:
        if hasattr(iterator, "close"):
            iterator.close()
    message = str(err.value)
    assert f"{val}: record {bad} cannot be read" in message
    assert f"python -m beam_pipelines.stats --dataset {dataset_copy}" in message and "verify_checksums=true" in message
    from beam_pipelines.common.errors import exit_code

    assert exit_code(err.value) == 1


def test_batched_reads_equal_one_at_a_time_reads(sample_dataset):
    config = make_config(sample_dataset, "batch_size=8", "augment=false", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    source = grain.sources.ArrayRecordDataSource(ds.files("train"))
    reader = data.batch_reader(ds, "train", 8, seed=3, process_index=1, process_count=2)
    keys = np.array([7, 0, 3, 3, 100, 2, 50, 1])  # any order, repeats allowed
    batch = reader.read(np.arange(40, 48), keys)
    want = np.stack([np.frombuffer(source[int(k) * 2 + 1], "<u2") for k in keys])  # (8, 1024)
    assert batch["tokens"].dtype == np.uint16 and np.array_equal(batch["tokens"], want)
    assert batch["index"].tolist() == [(40 + j) * 2 + 1 for j in range(8)]  # global read indices
    # Batch 5 of the stream: read positions 40..47, their keys from the global shuffle.
    local = ds.num_records("train") // 2
    keys = data.shuffled_keys(np.arange(40, 48), local, 3)
    want = np.stack([np.frombuffer(source[int(k) * 2 + 1], "<u2") for k in keys])  # (8, 1024)
    assert np.array_equal(reader(5)["tokens"], want)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 591, 5335])
def test_the_shuffle_is_a_permutation_per_epoch(n):
    keys = data.shuffled_keys(np.arange(3 * n), n, seed=11)
    epochs = keys.reshape(3, n)  # (epochs, n)
    for e in range(3):
        assert sorted(epochs[e].tolist()) == list(range(n))
    if n >= 7:
        assert epochs[0].tolist() != list(range(n))  # shuffled
        assert epochs[0].tolist() != epochs[1].tolist()  # a new order each epoch
        assert keys.tolist() != data.shuffled_keys(np.arange(3 * n), n, seed=12).tolist()
    # Any subset of positions gets the keys the whole stream gives them (workers compute their own batches).
    pick = np.array([3 * n - 1, 0, n // 2])
    assert data.shuffled_keys(pick, n, seed=11).tolist() == keys[pick].tolist()


@pytest.mark.slow
def test_one_and_two_workers_give_identical_batches(sample_dataset):
    """With augmentation: every batch is a function of its index, whichever process makes it."""
    runs = {}
    for workers in (0, 1, 2):
        config = make_config(sample_dataset, "batch_size=4", f"num_workers={workers}")
        iterator = data.train_iterator(data.open_dataset(str(sample_dataset), config), config)
        try:
            runs[workers] = [next(iterator) for _ in range(6)]
        finally:
            if hasattr(iterator, "close"):
                iterator.close()
    for workers in (1, 2):
        for got, want in zip(runs[workers], runs[0], strict=True):
            assert set(got) == set(want)
            for key in want:
                assert np.array_equal(got[key], want[key]), (workers, key)


def test_num_workers_defaults_to_the_usable_cores(sample_dataset, monkeypatch):
    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: set(range(40)), raising=False)
    assert data.resolve_workers(make_config(sample_dataset)) == data.MAX_AUTO_WORKERS
    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert data.resolve_workers(make_config(sample_dataset)) == 2
    assert data.resolve_workers(make_config(sample_dataset, "num_workers=0")) == 0
    assert data.resolve_workers(make_config(sample_dataset, "num_workers=3")) == 3


@pytest.mark.slow
def test_worker_processes_end_with_a_killed_trainer(sample_dataset, repo_root):
    import os
    import signal
    import time

    code = (
        "from trainer import data\n"
        "from tests.trainer.helpers import make_config\n"
        f"config = make_config({str(sample_dataset)!r}, 'num_workers=2', 'batch_size=4')\n"
        "it = data.train_iterator(data.open_dataset(config.data_dir, config), config)\n"
        # Batches come from the workers in turn: after four, both workers have started (and asked the
        # kernel to end them with the trainer). A worker still starting when the trainer dies is not covered.
        "for _ in range(4): next(it)\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    from tests.trainer.helpers import subprocess_env

    proc = subprocess.Popen([sys.executable, "-c", code], cwd=repo_root, env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=True).stdout.split()
        assert len(children) >= 2  # the workers (and Grain's resource tracker)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def alive(pid: str) -> bool:
        try:
            with open(f"/proc/{pid}/status") as f:
                return "zombie" not in f.read()
        except OSError:
            return False

    # A worker still importing when the trainer died leaves once it starts (seconds on a busy host).
    deadline = time.monotonic() + 60
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in children if alive(p)]


# ---- chunks of batches per Grain element; the state is the next batch index


def _stream_batches(ds, config, n: int) -> list[dict]:
    """Batches 0..n-1 built from the batch-sized stream, one Grain element per batch (the definition)."""
    stream = data.train_dataset(ds, config.train_split, batch_size=config.batch_size, seed=config.seed,
                                augment_fields=config.augment)
    return [data.make_example(stream[j], ds.pad_id) for j in range(n)]


@pytest.mark.parametrize("chunk_records", [8, 20, 256])
def test_chunks_of_batches_give_the_batches_of_the_stream(sample_dataset, monkeypatch, chunk_records):
    """However many batches a Grain element holds (K = 2, 5, 64 here), the batches are the stream's."""
    monkeypatch.setattr(data, "CHUNK_RECORDS", chunk_records)
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    want = _stream_batches(ds, config, 11)
    iterator = data.train_iterator(ds, config)
    assert iterator.chunk == -(-chunk_records // 4)
    for j, w in enumerate(want):
        got = next(iterator)
        assert set(got) == set(w)
        for key in w:
            assert np.array_equal(got[key], w[key]), (j, key)


def test_resuming_inside_a_chunk_and_old_state_forms(sample_dataset, monkeypatch):
    monkeypatch.setattr(data, "CHUNK_RECORDS", 12)  # 3 batches of 4 per element
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    want = _stream_batches(ds, config, 9)
    # The first hash-v1 pipeline's states: threads {"next_index"}, worker processes Grain's interleave state.
    legacy_workers = {"next_index_in_cycle": 1, "next_index_in_datasets": 2, "iterators_in_use_indices": [0, 1],
                      "iterators_in_use_states": [{"next_index": 3}, {"next_index": 2}], "exhausted": [0, 0],
                      "future_states": {}}
    for state, first in [({"next_batch": 4}, 4), ({"next_batch": 6}, 6), ({"next_index": 7}, 7), (legacy_workers, 5)]:
        iterator = data.train_iterator(ds, config)
        next(iterator)  # a stream already running is replaced
        iterator.set_state(state)
        assert iterator.get_state() == {"next_batch": first}
        for j in range(first, 9):
            assert np.array_equal(next(iterator)["inputs"], want[j]["inputs"]), (state, j)
        assert iterator.get_state() == {"next_batch": 9}
    with pytest.raises(ValueError, match="not a training iterator state"):
        data.train_iterator(ds, config).set_state({"something": 1})


def test_chunk_augmentation_in_slices_equals_the_whole_chunk(sample_dataset, monkeypatch):
    config = make_config(sample_dataset)
    ds = data.open_dataset(str(sample_dataset), config)
    batch = data.batch_reader(ds, "train", 150, seed=2)(3)  # 150 records: slices of 64, 64 and 22
    whole = data.augment.augment_batch(batch["tokens"], 9, batch["index"])
    assert np.array_equal(data._Augment(9)(batch), whole)
    monkeypatch.setattr(data, "AUGMENT_ROWS", 7)
    assert np.array_equal(data._Augment(9)(batch), whole)


@pytest.mark.slow
def test_workers_resume_from_a_state_taken_with_another_worker_count(sample_dataset):
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0")
    ds = data.open_dataset(str(sample_dataset), config)
    want = _stream_batches(ds, config, 70)  # past the first chunk of 64 batches
    threads = data.train_iterator(ds, config)
    for _ in range(61):
        next(threads)
    state = json.loads(json.dumps(threads.get_state()))
    resumed = data.train_iterator(ds, make_config(sample_dataset, "batch_size=4", "num_workers=2"))
    try:
        resumed.set_state(state)
        for j in range(61, 70):
            assert np.array_equal(next(resumed)["inputs"], want[j]["inputs"]), j
    finally:
        resumed.close()
