"""The KV-cache decode path equals the training forward; constrained sampling keeps what is given."""

from __future__ import annotations

import datetime as dt

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tokenizer import decode_measurement, encode_measurement
from tokenizer.vocab import BYTE_OFFSET, IPV6_START, MEASUREMENT_START, PAD, VOCAB_SIZE
from tokenizer import grammar
from trainer.eval import sampling
from trainer import model as model_lib
from trainer.config import ModelConfig

CFG = ModelConfig(num_layers=2, width=32, num_heads=2, mlp_dim=64)


def _model(cfg: ModelConfig = CFG, seed: int = 0) -> model_lib.Decoder:
    """A fresh model whose readout is scaled up, so logits differ visibly between tokens and positions."""
    model = model_lib.create(cfg, seed)
    model.head.kernel.value = model.head.kernel.value * 300.0
    return model


_forward = nnx.jit(lambda model, tokens: model(tokens))
_decode = nnx.jit(lambda model, tokens, positions, cache: model.decode(tokens, positions, cache))


def _tokens(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB_SIZE, size=shape))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cached_step_by_step_logits_equal_the_full_forward(dtype):
    cfg = ModelConfig(num_layers=2, width=32, num_heads=2, mlp_dim=64, dtype=dtype)
    model = _model(cfg)
    tokens = _tokens((3, 70))  # (batch, seq)
    full = np.asarray(_forward(model, tokens))  # (batch, seq, vocab)
    assert full.std() > 0.1
    cache = model.init_cache(3, 96)
    p = 41
    logits, cache = _decode(model, tokens[:, :p], jnp.broadcast_to(jnp.arange(p), (3, p)), cache)
    pieces = [np.asarray(logits)]
    for t in range(p, 70):
        logits, cache = _decode(model, tokens[:, t : t + 1], jnp.full((3, 1), t), cache)
        pieces.append(np.asarray(logits))
    stepped = np.concatenate(pieces, axis=1)
    tol = 1e-4 if dtype == "float32" else 0.1  # bfloat16 rounds differently when sequences are cut up
    np.testing.assert_allclose(stepped, full, atol=tol * max(1.0, np.abs(full).max()), rtol=0)


def test_training_forward_is_unchanged_by_the_decode_path():
    """``positions=None`` in rope is the training path: identical to explicit 0..seq-1 positions."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 3, 8))  # (batch, seq, heads, head_dim)
    explicit = model_lib.rope(x, 10_000.0, jnp.broadcast_to(jnp.arange(9), (2, 9)))
    np.testing.assert_array_equal(np.asarray(model_lib.rope(x, 10_000.0)), np.asarray(explicit))


@pytest.mark.slow
def test_padded_prefill_of_unequal_prompts_matches_each_prompt_alone():
    model = _model()
    graphdef, state = nnx.split(model)
    sampler = sampling.Sampler(graphdef, nnx.to_pure_dict(state))
    lengths = (5, 77, 30)
    record = np.asarray(_tokens((1, 80), seed=1))  # prompts are prefixes of one record, as in evaluation
    full = np.asarray(_forward(model, jnp.asarray(record)))[0]  # (seq, vocab)
    prompts = [record[0, :n] for n in lengths]
    last, cache = sampler.prefill(prompts, 128)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(last[i], full[n - 1], atol=1e-4 * np.abs(full).max())
    # One more token after each prompt: the stale padded slots must not leak into the next step.
    stepped, _ = sampler.step(record[0, list(lengths)], np.array(lengths), cache)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(stepped[i], full[n], atol=1e-4 * np.abs(full).max())


@pytest.mark.slow
def test_shared_prompt_decoding_equals_the_full_forward():
    """Several continuations per prompt over the prompts' one cache: the logits of the whole sequences."""
    model = _model()
    graphdef, state = nnx.split(model)
    sampler = sampling.Sampler(graphdef, nnx.to_pure_dict(state))
    samples, new = 3, 6
    lengths = np.array([9, 40])
    records = np.array(_tokens((2 * samples, 40 + new), seed=5))  # one row per continuation
    for p in range(2):  # the rows of a prompt share its tokens, then go their own ways
        records[p * samples : (p + 1) * samples, : lengths[p]] = records[p * samples, : lengths[p]]
    full = np.asarray(_forward(model, jnp.asarray(records)))  # (rows, seq, vocab)
    tol = 1e-4 * np.abs(full).max()
    last, prefix = sampler.prefill([records[p * samples, : lengths[p]] for p in range(2)])
    for p in range(2):
        np.testing.assert_allclose(last[p], full[p * samples, lengths[p] - 1], atol=tol)
    cache = sampler.new_cache(prefix, samples, 8)
    positions = np.repeat(lengths, samples)  # (rows,)
    for t in range(new):
        rows = np.arange(2 * samples)
        logits, cache = sampler.step_shared(records[rows, positions], positions, prefix, lengths, cache)
        np.testing.assert_allclose(logits, full[rows, positions], atol=tol)
        positions = positions + 1


@pytest.fixture(scope="module")
def random_sampler():
    """An untrained model: its samples are nearly arbitrary, which is what the grammar must cope with."""
    model = _model(seed=3)
    graphdef, state = nnx.split(model)
    return sampling.Sampler(graphdef, nnx.to_pure_dict(state))


@pytest.mark.slow
def test_samples_of_an_untrained_model_always_decode_and_keep_the_given_fields(random_sampler):
    context = encode_measurement({
        "msm_id": 1001, "event_time": dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc), "src_addr": "10.0.0.1",
        "dst_addr": "8.8.8.8", "ip_version": 4, "rtt": 12.5, "size": 64, "packet_error_count": 0,
    })  # fmt: skip
    src_v6 = [1, IPV6_START, *[BYTE_OFFSET + b for b in bytes.fromhex("20010db8000000000000000000000001")]]
    prompts = [
        [MEASUREMENT_START],
        [*context, MEASUREMENT_START, *src_v6],  # context, then a measurement whose source is given
        [MEASUREMENT_START, 5, *[BYTE_OFFSET] * 8],  # rtt given (0.0)
    ]
    outs = sampling.sample(random_sampler, prompts, 24, seed=7)
    for prompt, out in zip(prompts, outs):
        assert out.shape[0] == 24
        for m in sampling.complete_measurements(prompt, out):
            row = decode_measurement(m)
            head = sampling.current_measurement(prompt)
            assert m[: len(head)].tolist() == list(head)
            if prompt is prompts[1]:
                assert row["src_addr"] == "2001:db8::1" and row["ip_version"] == 6
            if prompt is prompts[2]:
                assert row["rtt"] == 0.0
    assert (outs[0] != PAD).sum(axis=1).min() == 44  # an IPv4 measurement after its MeasurementStart


@pytest.mark.slow
def test_sampling_is_deterministic_in_the_seed(random_sampler):
    a = sampling.sample(random_sampler, [[MEASUREMENT_START]], 8, seed=1)[0]
    b = sampling.sample(random_sampler, [[MEASUREMENT_START]], 8, seed=1)[0]
    c = sampling.sample(random_sampler, [[MEASUREMENT_START]], 8, seed=2)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow
def test_temperature_zero_takes_the_most_likely_allowed_token(random_sampler):
    prompt = [MEASUREMENT_START, 7]  # errors block: one byte, then the rest
    out = sampling.sample(random_sampler, [prompt], 3, temperature=0.0)[0]
    assert (out == out[0]).all()  # greedy: all rows equal
    logits, _ = random_sampler.prefill([prompt], 64)
    allowed = grammar.allowed(grammar.state_of(prompt))[0]
    assert out[0, 0] == np.argmax(np.where(allowed, logits[0], -np.inf))


@pytest.mark.slow
def test_a_complete_or_contextless_prompt_is_refused(random_sampler):
    whole = encode_measurement({
        "msm_id": 1, "event_time": dt.datetime(2025, 1, 1), "src_addr": "1.1.1.1",
        "dst_addr": "2.2.2.2", "ip_version": 4, "rtt": 1.0, "size": 1, "packet_error_count": 0,
    })  # fmt: skip
    with pytest.raises(grammar.GrammarError):
        sampling.sample(random_sampler, [whole], 2)
    with pytest.raises(grammar.GrammarError):
        sampling.sample(random_sampler, [[BYTE_OFFSET]], 2)


def test_load_refuses_a_workdir_without_checkpoints(tmp_path):
    from beam_pipelines.common.errors import InputError, exit_code

    with pytest.raises(sampling.CheckpointError, match="no checkpoints/ directory") as raised:
        sampling.load(str(tmp_path))
    assert isinstance(raised.value, InputError) and exit_code(raised.value) == 2  # a missing input
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(sampling.CheckpointError, match="no complete checkpoint"):
        sampling.load(str(tmp_path))


def test_a_scheme_without_a_grammar_is_refused_for_decoding(monkeypatch):
    """v1 and v2 have their grammars; a checkpoint of a scheme without one (a scheme whose grammar is not
    written yet) is refused with one usage error naming the workdir and the scheme (exit 2)."""
    from beam_pipelines.common.errors import UsageError, exit_code
    from tokenizer import registry
    from tokenizer.v1 import SchemeV1

    for name in ("v1", "v2"):
        sampling.check_decodable(name, "w")  # nothing raised

    class Ungrammatical(SchemeV1):
        name = "v1_ungrammatical"
        grammar = None

    monkeypatch.setitem(registry._SCHEMES, Ungrammatical.name, Ungrammatical())
    with pytest.raises(UsageError, match="^w: the checkpoint's tokenizer v1_ungrammatical has no constrained-decoding "
                                         "grammar yet") as raised:
        sampling.check_decodable("v1_ungrammatical", "w")
    assert exit_code(raised.value) == 2


@pytest.mark.slow
def test_load_restores_the_trained_parameters(trained_workdir, loaded_model):
    from tests.trainer.eval.conftest import TRAIN_STEPS

    assert loaded_model.step == TRAIN_STEPS
    assert loaded_model.config.model.width == 32
    cfg = loaded_model.config
    fresh = nnx.to_pure_dict(nnx.state(model_lib.create(cfg.model, cfg.seed), nnx.Param))
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), loaded_model.params, fresh)
    assert max(jax.tree.leaves(moved)) > 1e-4  # trained, not freshly initialised
    with pytest.raises(sampling.CheckpointError, match="no checkpoint for step 3"):
        sampling.load(str(trained_workdir), step=3)


@pytest.mark.slow
def test_checkpoints_from_before_the_field_embedding_still_load(eval_dataset, tmp_path):
    """A checkpoint whose saved config predates ``model.field_embedding`` (no such key) loads as a model
    without one, and samples."""
    import json

    from tests.trainer.eval.conftest import MINI
    from tests.trainer.helpers import make_config
    from trainer import train

    config = make_config(
        eval_dataset, *MINI, "model.field_embedding=false", "steps=2", "batch_size=2", "eval_every=0",
        "eval_batches=1", "checkpoint_every=2", "async_checkpointing=false", "num_workers=0",
    )  # fmt: skip
    train.train_and_evaluate(config, str(tmp_path))
    meta_file = tmp_path / "checkpoints" / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    for key in ("field_embedding", "attention"):  # what an older version wrote
        del meta["config"]["model"][key]
    meta_file.write_text(json.dumps(meta))
    loaded = sampling.load(str(tmp_path))
    assert loaded.config.model.field_embedding is False and "field" not in loaded.params
    outs = sampling.sample(sampling.Sampler.from_loaded(loaded), [[MEASUREMENT_START]], 4, seed=1)
    for m in sampling.complete_measurements([MEASUREMENT_START], outs[0]):
        decode_measurement(m)
