"""Training on a scheme-v2 dataset: vocabulary, field embedding and augmentation from the dataset's scheme,
a bit-identical resume, the refusal of a config of another scheme, and v2's field ids and field orders."""

from __future__ import annotations

import numpy as np
import pytest

from beam_pipelines.dataset.records import iter_record_blocks
from tests.trainer.helpers import MINI, make_config
from tokenizer import get_scheme
from trainer import augment, data, metrics_log, train

STEPS = 12
RUN = [*MINI, "tokenizer=v2", f"steps={STEPS}", "batch_size=4", "warmup_steps=2", "log_every=1",
       "checkpoint_every=4", "eval_every=6", "eval_batches=1", "keep_checkpoints=2", "num_workers=0"]


@pytest.fixture(scope="module")
def v2_dataset(sample_dataset_v2):
    """The session's v2 pretokenized sample (tests/conftest.py); do not modify."""
    return sample_dataset_v2


def _records(ds, n=8):
    import json

    manifest = json.loads((ds / "manifest.json").read_text())
    path = ds / manifest["splits"]["train"]["files"][0]["path"]
    return next(iter_record_blocks(str(path), manifest["seq_len"], n))


def test_a_v2_config_takes_the_schemes_keys(v2_dataset):
    config = make_config(v2_dataset, *RUN)
    scheme = get_scheme("v2")
    assert (config.tokenizer, config.pad_id, config.model.vocab_size) == ("v2", scheme.pad_id, scheme.vocab_size)
    assert data.open_dataset(str(v2_dataset), config).pad_id == scheme.pad_id


def test_a_v1_config_on_a_v2_dataset_is_refused(v2_dataset):
    with pytest.raises(data.DatasetError, match="dataset tokenizer name is 'v2' but 'v1' is expected"):
        data.open_dataset(str(v2_dataset), make_config(v2_dataset, *MINI))


def test_v2_augmentation_keeps_every_measurement(v2_dataset):
    scheme = get_scheme("v2")
    records = _records(v2_dataset)
    out = augment.augment_batch(records, 7, np.arange(len(records)), scheme)
    assert (out != records).any()
    for a, b in zip(records, out):
        assert scheme.decode_record(a) == scheme.decode_record(b)
    again = augment.augment_batch(records, 7, np.arange(len(records)), scheme)
    assert np.array_equal(out, again)  # deterministic in (seed, index)
    # eval_order_share 1: every measurement in evaluation's order (addresses first, RTT last), as stored
    assert np.array_equal(augment.augment_batch(out, 7, np.arange(len(records)), scheme, eval_share=1.0), records)
    half = augment.augment_batch(records, 7, np.arange(len(records)), scheme, eval_share=0.5)
    kept = (np.argsort(scheme.parse_records(half).blocks, axis=1) == np.arange(4)).all(axis=1).mean()
    assert 0.5 < kept < 0.7  # half kept by the share, and 1/24 of the rest drawn in that order anyway


def test_v2_field_kinds_follow_the_schemes_blocks(v2_dataset):
    scheme = get_scheme("v2")
    records = _records(v2_dataset, 2)
    kinds = augment.field_kinds(records, scheme)
    parsed = scheme.parse_records(records)
    flat = kinds.reshape(-1)
    assert (flat[parsed.rtt_pos] == augment.KIND_NAMES.index("rtt")).all()
    two = parsed.rtt != -1.0  # a failure is one token
    assert (flat[parsed.rtt_pos[two] + 1] == augment.KIND_NAMES.index("rtt")).all()
    assert (flat[parsed.dst_pos + 1] == augment.KIND_NAMES.index("dst_addr")).all()
    assert (flat[records.reshape(-1) == scheme.pad_id] == augment.KIND_PAD).all()


def test_v2_field_ids_match_a_reference_walk(v2_dataset):
    import jax.numpy as jnp

    from trainer import model as model_lib

    scheme = get_scheme("v2")
    spec = scheme.field_spec
    records = _records(v2_dataset, 2).astype(np.int32)
    positions = np.broadcast_to(np.arange(records.shape[1]), records.shape)
    empty = jnp.full((len(records),), model_lib.empty_block_state(spec))
    rows, _ = model_lib.field_ids(jnp.asarray(records), jnp.asarray(positions), empty, spec)
    rows = np.asarray(rows)
    for b, rec in enumerate(records):
        kind, start = spec.kinds, -1
        for i, t in enumerate(rec):
            if spec.block_kind[t] >= 0:
                kind, start = int(spec.block_kind[t]), i
            offset = min(max(i - start, 0), spec.max_offset) if start >= 0 else min(i + 1, spec.max_offset)
            assert rows[b, i] == kind * (spec.max_offset + 1) + offset, (b, i)


@pytest.fixture(scope="module")
def v2_reference(v2_dataset, tmp_path_factory):
    """An uninterrupted v2 run of RUN, for the resume test to compare with and the evaluation test to read;
    do not modify."""
    ref = tmp_path_factory.mktemp("v2_reference")
    summary = train.train_and_evaluate(make_config(v2_dataset, *RUN), str(ref))
    assert summary["step"] == STEPS
    return ref


@pytest.mark.slow
def test_v2_resume_after_stop_at_is_bit_identical(v2_dataset, v2_reference, tmp_path):
    ref = v2_reference
    records = metrics_log.read_metrics(str(ref))
    assert abs(records[0]["loss"] - np.log(get_scheme("v2").vocab_size)) < 0.1  # near uniform over v2's ids
    assert "eval_loss_rtt" in records[-1]
    first = train.train_and_evaluate(make_config(v2_dataset, *RUN, "stop_at=5"), str(tmp_path / "b"))
    assert first["step"] == 5
    second = train.train_and_evaluate(make_config(v2_dataset, *RUN), str(tmp_path / "b"))
    assert second["start_step"] == 4 or second["start_step"] == 5
    losses = lambda w: [(r["step"], r["loss"]) for r in metrics_log.read_metrics(str(w))]  # noqa: E731
    assert losses(tmp_path / "b") == losses(ref)  # exact, not approximate


@pytest.mark.slow
def test_model_evaluation_and_prediction_of_a_v2_checkpoint(v2_dataset, v2_reference, sample_dataset, tmp_path,
                                                            capsys):
    """trainer.evaluate and trainer.predict on a v2 checkpoint: prompts, descent and samples through v2's
    grammar; a v1 checkpoint on the v2 dataset is refused with one error line, exit 2, nothing written."""
    import json

    from trainer.eval import evaluate, predict

    w = v2_reference
    capsys.readouterr()
    out = tmp_path / "report"
    assert evaluate.run(["--workdir", str(w), "--data_dir", str(v2_dataset), "--split", "test", "--output", str(out),
                         "--max_measurements", "64", "--samples", "4", "--nll_batches", "1", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["evaluated_measurements"] == 64 and report["meta"]["checkpoint_step"] == STEPS
    assert report["rtt"]["model"]["measurements"] == 64 and report["rtt"]["model"]["scored"] > 0
    assert set(report["rtt"]["model"]["vs"]) == set(report["rtt"]["baselines"])
    assert report["nll"]["measurements"] > 0 and report["nll_per_field"]["rtt"]["bits_per_token"] > 0
    row = get_scheme("v2").decode_record(_records(v2_dataset, 1)[0])[0]
    capsys.readouterr()
    assert predict.run(["--workdir", str(w), "--src", row["src_addr"], "--dst", row["dst_addr"], "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    values = list(answer["rtt_quantiles"].values())
    assert len(values) == 3 and values == sorted(values) and 0 <= answer["failure_probability"] <= 1
    assert isinstance(answer["timestamp_from_model"], int)
    assert predict.run(["--workdir", str(w), "--src", row["src_addr"], "--dst", row["dst_addr"], "--time",
                        str(row["event_time"]), "--samples", "8", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["rtt_samples"]) == 8 and "timestamp_from_model" not in answer
    assert all(m["src_addr"] == row["src_addr"] and m["dst_addr"] == row["dst_addr"] for m in answer["measurements"])
    assert predict.run(["--workdir", str(w), "--dst", row["dst_addr"]]) == 2
    assert "needs the source" in capsys.readouterr().err
    # a v1 checkpoint on the v2 dataset
    v1 = tmp_path / "v1"
    train.train_and_evaluate(make_config(sample_dataset, *MINI, "steps=1", "eval_every=0", "batch_size=2",
                                         "checkpoint_every=1", "num_workers=0"), str(v1))
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert evaluate.run(["--workdir", str(v1), "--data_dir", str(v2_dataset), "--output", str(refused)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "dataset tokenizer name is 'v2' but 'v1' is expected" in err
    assert not refused.exists()
    # the baselines read the v2 dataset
    assert evaluate.run(["--baselines_only", "--data_dir", str(v2_dataset), "--output", str(tmp_path / "b"),
                         "--max_measurements", "500"]) == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["tokenizer=v9"], "unknown tokenizer scheme 'v9'"),
        (["model.tokenizer=v2"], "model.tokenizer v2 differs from tokenizer v1"),
        (["eval_order_share=1.5"], "eval_order_share must be in [0, 1]"),
    ],
)
def test_bad_scheme_keys_in_a_config_are_refused(v2_dataset, extra, message):
    from trainer.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_config(v2_dataset, *MINI, *extra)
