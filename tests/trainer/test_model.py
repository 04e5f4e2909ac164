"""The decoder (trainer/model.py) and the pure train step."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.trainer.helpers import MINI, make_config
from tokenizer import PAD
from trainer import data, steps, train_state, train_stream
from trainer import model as model_lib
from trainer.config import load_config
from trainer.example import make_example


@pytest.fixture(scope="module")
def batch(sample_dataset):
    config = make_config(sample_dataset, "batch_size=2", "num_workers=0")  # one batch: no worker processes
    return next(train_stream.train_iterator(data.open_dataset(str(sample_dataset), config), config))


def _split(config):
    model = model_lib.create(config.model, config.seed)
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


@pytest.mark.slow
def test_fresh_model_loss_is_close_to_ln_vocab(batch):
    config = load_config("tiny")
    graphdef, params = _split(config)
    ce = jax.jit(steps.token_losses, static_argnums=0)(graphdef, params, batch["inputs"], batch["targets"])
    loss = float((ce * batch["weights"]).sum() / batch["weights"].sum())
    assert abs(loss - math.log(267)) < 0.02, loss


@pytest.mark.slow
def test_attention_is_causal():
    config = load_config("tiny", [*MINI, "model.num_layers=2"])
    model = model_lib.create(config.model, 0)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 267, size=(1, 64)), jnp.int32)
    changed = tokens.at[0, 40].set((tokens[0, 40] + 1) % 267)
    a, b = model(tokens), model(changed)
    assert a.shape == (1, 64, 267) and a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a[0, :40]), np.asarray(b[0, :40]))
    assert not np.allclose(np.asarray(a[0, 40:]), np.asarray(b[0, 40:]))


@pytest.mark.slow
def test_bfloat16_compute_gives_float32_logits_near_float32():
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 267, size=(2, 32)), jnp.int32)
    f32 = model_lib.create(load_config("tiny", MINI).model, 0)(tokens)
    bf16 = model_lib.create(load_config("tiny", [*MINI, "model.dtype=bfloat16"]).model, 0)(tokens)
    assert bf16.dtype == jnp.float32 and bool(jnp.isfinite(bf16).all())
    np.testing.assert_allclose(np.asarray(bf16), np.asarray(f32), atol=0.05)


@pytest.mark.slow
def test_dropout_only_with_a_key():
    config = load_config("tiny", [*MINI, "model.dropout=0.5"])
    model = model_lib.create(config.model, 0)
    tokens = jnp.zeros((1, 16), jnp.int32)
    np.testing.assert_array_equal(np.asarray(model(tokens)), np.asarray(model(tokens)))
    key = jax.random.PRNGKey(0)
    assert not np.allclose(np.asarray(model(tokens, dropout_key=key)), np.asarray(model(tokens)))


@pytest.mark.slow
def test_pad_targets_do_not_count_in_the_loss(batch):
    config = load_config("tiny", MINI)
    graphdef, params = _split(config)
    tx, schedule = train_state.make_optimizer(config)
    step = jax.jit(steps.make_train_step(graphdef, tx, schedule, config))
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "rng": jax.random.PRNGKey(0),
    }
    # Cut the first record short: everything after position 500 becomes PAD.
    inputs = np.array(batch["inputs"])
    inputs[0, 500:] = PAD
    example = make_example(inputs.astype(np.uint16), PAD)
    _, metrics = step(state, example)
    # Scribble over what the weights say is not counted: inputs after the cut, targets of weight 0.
    scribbled = {k: np.array(v) for k, v in example.items()}
    scribbled["inputs"][0, 501:] = 17
    scribbled["targets"][scribbled["weights"] == 0] = 42
    _, metrics2 = step(state, scribbled)
    assert float(metrics["target_tokens"]) == float(example["weights"].sum())
    assert float(metrics["loss"]) == float(metrics2["loss"])


def test_weight_decay_skips_norms_and_biases():
    _, params = _split(load_config("tiny"))
    mask = train_state.decay_mask(params)
    flat = {"/".join(map(str, k)): v for k, v in nnx.traversals.flatten_mapping(mask).items()}
    assert flat["norm/scale"] is False and flat["blocks/0/attn_norm/scale"] is False
    assert flat["head/kernel"] is True and flat["blocks/0/mlp/gate/kernel"] is True


def _field_rows_by_loop(tokens):
    """Reference for ``model_lib.field_ids``: walk each row, remembering the last block-opening role token."""
    block_roles = {0, 1, 2, 5, 6, 7, 8, 9}  # every role but the address-family tokens Ipv4Start/Ipv6Start
    out = np.zeros(tokens.shape, np.int64)
    for r, row in enumerate(tokens):
        role, pos = 10, -1  # 10: before the first block start
        for i, tok in enumerate(row):
            if tok in block_roles:
                role, pos = tok, i
            out[r, i] = role * 18 + min(i - pos, 17)
    return out


@pytest.mark.slow
def test_field_ids_name_each_tokens_block_and_offset():
    import datetime as dt

    from tokenizer import encode_measurement

    m6 = np.asarray(encode_measurement({
        "msm_id": 7, "event_time": dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc), "src_addr": "2001:db8::2",
        "dst_addr": "2001:db8::1", "ip_version": 6, "rtt": 1.5, "size": 64, "packet_error_count": 0,
    }))  # fmt: skip
    rng = np.random.default_rng(2)
    real = np.concatenate([m6, m6, np.full(20, PAD)])[None, :]  # a record: measurements then padding
    noise = rng.integers(0, 267, size=(3, real.shape[1]))  # arbitrary ids, role tokens anywhere
    tokens = np.concatenate([real, noise])
    b, t = tokens.shape
    positions = np.broadcast_to(np.arange(t), (b, t))
    empty = np.full((b,), model_lib.EMPTY_BLOCK_STATE)
    rows, _ = model_lib.field_ids(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(empty))
    np.testing.assert_array_equal(np.asarray(rows), _field_rows_by_loop(tokens))
    # In the real measurement: the first address byte of the IPv6 destination is (DestIpStart, offset 2).
    dst = int(np.flatnonzero(m6 == 2)[0])
    assert int(rows[0, dst + 2]) == 2 * 18 + 2
    # Fed in two pieces with the state carried, the rows are the same as in one piece.
    cut = 37
    tokens, positions = jnp.asarray(tokens), jnp.asarray(positions)
    first, state = model_lib.field_ids(tokens[:, :cut], positions[:, :cut], jnp.asarray(empty))
    second, _ = model_lib.field_ids(tokens[:, cut:], positions[:, cut:], state)
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), np.asarray(rows))


@pytest.mark.slow
def test_field_embedding_can_be_switched_off():
    on = load_config("tiny", MINI).model
    off = load_config("tiny", [*MINI, "model.field_embedding=false"]).model
    assert model_lib.count_params(on) - model_lib.count_params(off) == model_lib.FIELD_ROWS * on.width
    assert model_lib.flops_per_token(on, 1024) == model_lib.flops_per_token(off, 1024)  # a lookup, no matmul
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 267, size=(1, 32)), jnp.int32)
    assert model_lib.create(off, 0)(tokens).shape == (1, 32, 267)


def test_attention_kernel_choice():
    cfg = load_config("tiny", MINI).model
    assert model_lib.attention_kernel(cfg) == "xla"  # float32, and no GPU in the test suite's world
    bf16 = load_config("tiny", [*MINI, "model.dtype=bfloat16"]).model
    expected = "cudnn" if jax.default_backend() == "gpu" else "xla"
    assert model_lib.attention_kernel(bf16) == expected
    forced = load_config("tiny", [*MINI, "model.dtype=bfloat16", "model.attention=xla"]).model
    assert model_lib.attention_kernel(forced) == "xla"
