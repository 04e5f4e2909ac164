"""The pure step functions: ``train_step(state, batch) -> (state, metrics)`` (jitted once by the training
loop) and ``eval_step(params, batch) -> sums`` (loss and weight, overall and per field kind)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from trainer import augment
from trainer.config import Config


def token_losses(graphdef: nnx.GraphDef, params: Any, inputs: jax.Array, targets: jax.Array, dropout_key=None):
    """Per-token cross-entropy, (batch, seq) float32."""
    model = nnx.merge(graphdef, params)
    logits = model(inputs, dropout_key=dropout_key)  # (batch, seq, vocab)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (batch, seq)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule, config: Config):
    """The pure ``train_step(state, batch) -> (state, metrics)``; the caller jits it once."""
    use_dropout = config.model.dropout > 0

    def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
        key = jax.random.fold_in(state["rng"], state["step"]) if use_dropout else None
        weights = batch["weights"]  # (batch, seq)
        total = weights.sum()

        def loss_fn(params):
            ce = token_losses(graphdef, params, batch["inputs"], batch["targets"], key)  # (batch, seq)
            return (ce * weights).sum() / jnp.maximum(total, 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "rng": state["rng"],
        }
        metrics = {
            "loss": loss,
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state["step"]),
            "target_tokens": total,
        }
        return new_state, metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef):
    """``eval_step(params, batch) -> sums`` of weighted loss and weight, overall and per field kind."""

    def eval_step(params: Any, batch: dict) -> dict:
        ce = token_losses(graphdef, params, batch["inputs"], batch["targets"])  # (batch, seq)
        w = batch["weights"]  # (batch, seq)
        onehot = jax.nn.one_hot(batch["kinds"], augment.NUM_KINDS, dtype=jnp.float32)  # (batch, seq, kinds); -1 -> 0
        return {
            "loss_sum": (ce * w).sum(),
            "weight_sum": w.sum(),
            "kind_loss_sum": jnp.einsum("bs,bsk->k", ce * w, onehot),  # (kinds,)
            "kind_weight_sum": jnp.einsum("bs,bsk->k", w, onehot),  # (kinds,)
        }

    return eval_step
