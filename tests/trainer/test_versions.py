"""Training binds to a dataset version: a run stopped on version 1 and resumed after a real
``pretokenize --append`` reads version 1's files only and gives the losses (``==``) of a run on an untouched
copy of version 1; ``advance_data_version`` moves a run on from the next step, by the stated rule; an old
checkpoint (no version in its meta) resumes as the version of its fingerprint; bad versions exit 2."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from beam_pipelines.common.errors import InputError, UsageError
from beam_pipelines.common.hashing import MASK64, splitmix64
from beam_pipelines.dataset import DatasetError
from beam_pipelines.dataset.records import read_records
from tests.trainer.helpers import MINI, append_later_rows, make_config, overrides
from trainer import augment, data, example, metrics_log, resume, shuffle, train, train_stream
from trainer import config as config_lib

STEPS, STOP, BATCH = 6, 3, 2
# num_workers=0: the same batches as with workers (test_train_stream.py), without starting processes for a short run.
RUN = [*MINI, f"steps={STEPS}", f"batch_size={BATCH}", "warmup_steps=2", "log_every=1", f"checkpoint_every={STOP}",
       "eval_every=0", "eval_batches=1", "num_workers=0"]
NEW_ROWS = 1000  # appended: the sample's first rows again, one day later (new measurements of the same sources)


def _losses(workdir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in metrics_log.read_metrics(str(workdir))]


def _meta(workdir, step: int) -> dict:
    return json.loads((workdir / "checkpoints" / str(step) / "meta" / "metadata").read_text())  # Orbax's JsonSave


@pytest.fixture(scope="module")
def versions(sample_dir, sample_dataset, tmp_path_factory):
    """Version 1: a copy of the session's sample dataset, whose untouched original the reference run reads; a
    run stopped at STOP on the copy, its workdir copied for the advance test and the rule reference; then a
    real ``pretokenize --append`` of new rows from sources that version 1 holds."""
    root = tmp_path_factory.mktemp("versions")
    ds = root / "ds"
    shutil.copytree(sample_dataset, ds)
    reference = root / "reference"
    train.train_and_evaluate(make_config(sample_dataset, *RUN), str(reference))
    stopped = root / "stopped"
    assert train.train_and_evaluate(make_config(ds, *RUN, f"stop_at={STOP}"), str(stopped))["step"] == STOP
    for name in ("advanced", "rule"):
        shutil.copytree(stopped, root / name)
    v1 = json.loads((ds / "manifest.json").read_text())

    append_later_rows(sample_dir, ds, root / "new", NEW_ROWS)
    v2 = json.loads((ds / "manifest.json").read_text())
    assert v2["version"] == 2 and v2["versions"][0]["fingerprint"] == v1["fingerprint"]
    assert v2["splits"]["train"]["records"] > v1["splits"]["train"]["records"]
    return {"root": root, "ds": ds, "reference": reference, "v1": v1, "v2": v2}


@pytest.mark.slow
def test_a_run_resumed_after_an_append_reads_its_version_bit_identically(versions, capsys):
    ds, v1, v2 = versions["ds"], versions["v1"], versions["v2"]
    workdir = versions["root"] / "stopped"
    meta = _meta(workdir, STOP)
    assert meta["data_version"] == 1 and meta["fingerprint"] == v1["fingerprint"]
    assert meta["config"]["data_version"] == 1  # what evaluate and predict default to
    # Version 2's files leave the folder for the resume: a run bound to version 1 never opens them.
    old_files = {f["path"] for split in v1["splits"].values() for f in split["files"]}
    new_files = [f["path"] for split in v2["splits"].values() for f in split["files"] if f["path"] not in old_files]
    assert new_files
    away = versions["root"] / "away"
    for rel in new_files:
        (away / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(ds / rel, away / rel)
    try:
        summary = train.train_and_evaluate(make_config(ds, *RUN), str(workdir))
    finally:
        for rel in new_files:
            shutil.move(away / rel, ds / rel)
    assert summary["start_step"] == STOP and summary["step"] == STEPS
    assert f"(version 1 of 2), resuming from step {STOP}" in capsys.readouterr().out
    assert _losses(workdir) == _losses(versions["reference"])  # exact, all the way to the end
    assert [r["eval_loss"] for r in metrics_log.read_metrics(str(workdir)) if "eval_loss" in r] == [
        r["eval_loss"] for r in metrics_log.read_metrics(str(versions["reference"])) if "eval_loss" in r
    ]
    assert {r["data_version"] for r in metrics_log.read_metrics(str(workdir))} == {1}
    assert _meta(workdir, STEPS)["data_version"] == 1 and _meta(workdir, STEPS)["fingerprint"] == v1["fingerprint"]


@pytest.mark.slow  # the module's runs
def test_a_checkpoint_without_a_version_resumes_as_the_version_of_its_fingerprint(versions):
    """Checkpoints written before versions existed hold a fingerprint only (version 1's here): such a run
    resumes on version 1 after the append, by the path the pinned resume above takes (same binding)."""
    meta = _meta(versions["root"] / "stopped", STOP)
    for key in ("data_version", "data_segments"):
        del meta[key]
    for key in ("data_version", "advance_data_version"):
        del meta["config"][key]
    assert config_lib.from_saved(meta["config"]).data_version == 0  # its config still loads (evaluate: the latest)
    config = make_config(versions["ds"], *RUN)
    binding = resume.choose_data_version(config, versions["v2"], meta, STOP)
    assert binding == resume.DataBinding(1, ((0, 1),))
    assert binding == resume.choose_data_version(config, versions["v2"], _meta(versions["root"] / "stopped", STOP), STOP)
    meta["fingerprint"] = "0" * 64  # another dataset: the refusal as before
    with pytest.raises(resume.ResumeError, match="has no version of that fingerprint"):
        resume.choose_data_version(config, versions["v2"], meta, STOP)


class _RuleIterator:
    """The batches the docs promise after ``advance_data_version`` at step ``k``, built by hand: batch ``j``
    holds read positions ``r = j*B .. j*B+B-1``; position ``p = r - k*B`` of the new segment (the second,
    number 1) is record ``perm[p mod n]`` of the new version's train split (its files in manifest order),
    ``perm = numpy.random.default_rng([splitmix64(seed), p div n, 1]).permutation(n)``, with the field orders
    of read index ``r``."""

    def __init__(self, records: np.ndarray, seed: int, batch_size: int, moved_at: int, pad_id: int):
        self.records, self.seed, self.b, self.k, self.pad_id = records, seed, batch_size, moved_at, pad_id
        self.next = 0

    def set_state(self, state):
        self.next = state["next_batch"]
        assert self.next == self.k

    def get_state(self):
        return {"next_batch": self.next}

    def __next__(self):
        r = self.next * self.b + np.arange(self.b)
        p = r - self.k * self.b
        n = len(self.records)
        perm = {e: np.random.default_rng([splitmix64(self.seed & MASK64), int(e), 1]).permutation(n) for e in set(p // n)}
        keys = [perm[q // n][q % n] for q in p]
        tokens = augment.augment_batch(self.records[keys], self.seed, r)
        self.next += 1
        return example.make_example(tokens, self.pad_id)


@pytest.mark.slow
def test_advance_data_version_moves_the_run_from_the_next_step_by_the_stated_rule(versions, monkeypatch, capsys):
    ds, v1, v2 = versions["ds"], versions["v1"], versions["v2"]
    n1, n2 = v1["splits"]["train"]["records"], v2["splits"]["train"]["records"]
    workdir = versions["root"] / "advanced"
    moved = train.train_and_evaluate(make_config(ds, *RUN, "advance_data_version=true"), str(workdir))
    assert moved["start_step"] == STOP and moved["step"] == STEPS
    out = capsys.readouterr().out
    assert (f"moving the run from dataset version 1 ({n1:,} train records) to version 2 ({n2:,} records, "
            f"{n2 - n1:+,}) from step {STOP + 1}") in out
    got, pinned = _losses(workdir), _losses(versions["reference"])
    assert [s for s, _ in got] == list(range(1, STEPS + 1))
    assert got[:STOP] == pinned[:STOP]
    assert all(g[1] != p[1] for g, p in zip(got[STOP:], pinned[STOP:]))  # another data order from step STOP + 1
    assert [r["data_version"] for r in metrics_log.read_metrics(str(workdir))] == [1] * STOP + [2] * (STEPS - STOP)
    meta = _meta(workdir, STEPS)
    assert meta["data_version"] == 2 and meta["fingerprint"] == v2["fingerprint"]
    assert meta["data_segments"] == [{"start_batch": 0, "version": 1, "records": n1},
                                     {"start_batch": STOP, "version": 2, "records": n2}]
    # Resumed again later, the key still given: already on the latest version, so nothing moves and the
    # stream keeps both segments (the iterator's resume inside a segment is tested below).
    again = resume.choose_data_version(make_config(ds, *RUN, "advance_data_version=true"), v2, meta, STEPS)
    assert again == resume.DataBinding(2, ((0, 1), (STOP, 2)))

    # The reference: the same checkpoint resumed, uninterrupted, on the batches of the stated rule built by
    # hand from version 2's records (the trainer itself believes it is still on version 1).
    seq_len = v2["seq_len"]
    records = np.concatenate([read_records(str(ds / f["path"]), seq_len) for f in v2["splits"]["train"]["files"]])
    assert len(records) == n2
    rule = _RuleIterator(records, seed=0, batch_size=BATCH, moved_at=STOP, pad_id=v2["tokenizer"]["pad_id"])
    monkeypatch.setattr(train, "train_iterator", lambda *a, **k: rule)
    reference = versions["root"] / "rule"
    train.train_and_evaluate(make_config(ds, *RUN), str(reference))
    assert _losses(workdir) == _losses(reference)


@pytest.mark.slow
def test_bad_versions_exit_2_with_one_line(versions, tmp_path, capsys):
    ds = versions["ds"]
    cases = [
        # A version the dataset does not have, on a fresh run.
        ([f"workdir={tmp_path / 'fresh'}", "data_version=3"], f"{ds}: no version 3; it has versions 1..2"),
        # Another version than the checkpoint's, without the key that moves a run.
        ([f"workdir={versions['root'] / 'stopped'}", "data_version=2"],
         "reads dataset version 1 of"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert train.run(["tiny", *overrides(ds, *RUN, *extra)]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


@pytest.mark.slow  # the module's runs
def test_evaluation_reads_the_checkpoints_version_or_the_one_named(versions, tmp_path, capsys):
    from trainer.eval import evaluate, sampling

    ds, v1, v2 = versions["ds"], versions["v1"], versions["v2"]

    def files(manifest):
        return [f["path"] for split in sorted(manifest["splits"]) for f in manifest["splits"][split]["files"]]

    loaded = sampling.load(str(versions["root"] / "stopped"), STOP)
    assert loaded.config.data_version == 1 and loaded.fingerprint == v1["fingerprint"]
    with_model = data.open_dataset(str(ds), loaded.config)  # what evaluate --workdir opens by default
    assert (with_model.version, with_model.latest_version, with_model.fingerprint) == (1, 2, v1["fingerprint"])
    assert files(with_model.manifest) == files(v1)
    assert with_model.num_records("test") == v1["splits"]["test"]["records"]
    baselines = data.open_dataset(str(ds))  # --baselines_only: the latest by default
    assert (baselines.version, baselines.fingerprint, files(baselines.manifest)) == (2, v2["fingerprint"], files(v2))
    assert files(data.open_dataset(str(ds), version=1).manifest) == files(v1)
    args = ["--baselines_only", "--data_dir", str(ds), "--output", str(tmp_path / "r"), "--no-progress"]
    capsys.readouterr()
    assert evaluate.run([*args, "--data_version", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {ds}: no version 3; it has versions 1..2"
    assert not (tmp_path / "r").exists()


# --- the choice of version, on hand-made manifests (pure: the quick set) ---------------------------------

FP = {1: "1" * 64, 2: "2" * 64, 3: "3" * 64}


def _manifest(n: int) -> dict:
    versions = [{"version": v, "fingerprint": FP[v]} for v in range(1, n + 1)]
    return {"fingerprint": FP[n], "version": n, "versions": versions}


def _saved(version: int | None, segments=None) -> dict:
    meta = {"fingerprint": FP[version or 1]}
    if version is not None:
        meta["data_version"] = version
    if segments is not None:
        meta["data_segments"] = [{"start_batch": b, "version": v, "records": 0} for b, v in segments]
    return meta


@pytest.mark.parametrize(
    "keys, manifest, saved, want",
    [
        ([], 3, None, (3, ((0, 3),), None)),  # fresh: the latest
        (["data_version=2"], 3, None, (2, ((0, 2),), None)),  # fresh: the one asked for
        ([], 3, _saved(1), (1, ((0, 1),), None)),  # resumed: the checkpoint's, whatever was appended
        (["data_version=1"], 3, _saved(1), (1, ((0, 1),), None)),  # the same, named
        ([], 3, _saved(None), (1, ((0, 1),), None)),  # a checkpoint from before versions: its fingerprint's
        (["advance_data_version=true"], 3, _saved(1), (3, ((0, 1), (40, 3)), 1)),  # moved to the latest at step 40
        (["advance_data_version=true", "data_version=2"], 3, _saved(1), (2, ((0, 1), (40, 2)), 1)),
        (["advance_data_version=true"], 3, _saved(3, [(0, 1), (20, 3)]), (3, ((0, 1), (20, 3)), None)),  # no-op
        (["advance_data_version=true"], 1, _saved(1), (1, ((0, 1),), None)),  # nothing newer: no-op
    ],
)
def test_the_version_a_run_reads(keys, manifest, saved, want):
    config = config_lib.load_config("tiny", ["data_dir=D", *keys])
    got = resume.choose_data_version(config, _manifest(manifest), saved, 40)
    assert (got.version, got.segments, got.moved_from) == want


@pytest.mark.parametrize(
    "keys, manifest, saved, error, message",
    [
        (["data_version=4"], 3, None, DatasetError, "D: no version 4; it has versions 1..3"),
        (["data_version=2"], 1, _saved(1), DatasetError, "D: no version 2; it has version 1"),
        (["data_version=3"], 3, _saved(1), resume.ResumeError,
         "reads dataset version 1 of D, not data_version=3; pass advance_data_version=true"),
        (["advance_data_version=true", "data_version=1"], 3, _saved(2), resume.ResumeError, "not back to 1"),
        ([], 1, _saved(2), resume.ResumeError, "but D has no version 2"),  # the dataset was rebuilt smaller
        ([], 3, {"fingerprint": "f" * 64}, resume.ResumeError, "has no version of that fingerprint"),
        ([], 3, {"fingerprint": "f" * 64, "data_version": 2}, resume.ResumeError,
         f"but D has fingerprint {FP[2]} at version 2"),
    ],
)
def test_a_version_that_cannot_be_read_is_refused(keys, manifest, saved, error, message):
    config = config_lib.load_config("tiny", ["data_dir=D", *keys])
    with pytest.raises(error, match=re.escape(message)):
        resume.choose_data_version(config, _manifest(manifest), saved, 40)
    assert issubclass(error, UsageError) or issubclass(error, InputError)  # both exit 2


def test_allow_fingerprint_change_reads_the_asked_version_in_one_segment():
    config = config_lib.load_config("tiny", ["data_dir=D", "allow_fingerprint_change=true"])
    saved = {"fingerprint": "f" * 64, "data_version": 2, "data_segments": [{"start_batch": 0, "version": 2}]}
    assert resume.choose_data_version(config, _manifest(3), saved, 40) == resume.DataBinding(3, ((0, 3),))


def test_data_version_must_not_be_negative():
    with pytest.raises(config_lib.ConfigError, match="data_version must be >= 1, or 0 for the latest"):
        config_lib.load_config("tiny", ["data_version=-1"])


# --- the stream of a moved run ------------------------------------------------------------------------------


@pytest.mark.slow  # the session's pretokenized sample
def test_a_stream_with_two_segments_follows_the_rule_and_resumes_inside_either(sample_dataset):
    """Segment 0 reads the first ``n1`` records (an earlier version) in the run's own orders; from batch 5 on
    segment 1 reads all ``n`` in ``default_rng([splitmix64(seed), epoch, 1])`` orders from its epoch 0."""
    config = make_config(sample_dataset, "batch_size=4", "num_workers=0", "seed=5")
    ds = data.open_dataset(str(sample_dataset), config)
    n = ds.num_records("train")
    n1, moved_at, b = n - 300, 5, 4
    segments = [train_stream.Segment(0, 1, n1), train_stream.Segment(moved_at, 2, n)]
    records = np.concatenate([read_records(path, ds.seq_len) for path in ds.files("train")])
    it = train_stream.train_iterator(ds, config, segments=segments)
    batches = [next(it)["inputs"] for _ in range(9)]
    it.close()
    for j, got in enumerate(batches):
        r = j * b + np.arange(b)
        if j < moved_at:
            keys = shuffle.epoch_permutation(n1, 5, 0)[r]
            assert shuffle.epoch_permutation(n1, 5, 0).tolist() == np.random.default_rng(
                [splitmix64(5), 0]).permutation(n1).tolist()
        else:
            keys = np.random.default_rng([splitmix64(5), 0, 1]).permutation(n)[r - moved_at * b]
        want = example.make_example(augment.augment_batch(records[keys], 5, r), ds.pad_id)["inputs"]
        assert np.array_equal(got, want), j
    for at in (3, 7):
        resumed = train_stream.train_iterator(ds, config, segments=segments)
        resumed.set_state({"next_batch": at})
        assert all(np.array_equal(next(resumed)["inputs"], batches[j]) for j in range(at, 9))
        resumed.close()
    single = train_stream.train_iterator(ds, config)  # one segment: the stream of a run that never moved
    assert not np.array_equal(next(single)["inputs"], batches[0])  # n1 != n: other orders
    single.close()
