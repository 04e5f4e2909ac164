"""The training state: AdamW with warmup and cosine decay (:func:`make_optimizer`) and a fresh state of
parameters, optimizer state, step and RNG key (:func:`init_state`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from trainer import model as model_lib
from trainer.config import Config


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices (kernels, embedding) only; never on norm scales or biases (1-D leaves)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: Config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup then cosine decay, after global-norm clipping."""
    warmup = min(config.warmup_steps, config.steps)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=config.learning_rate / max(warmup, 1),  # the first step already learns
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(config.steps, warmup + 1),
        end_value=config.learning_rate * config.min_learning_rate_ratio,
    )
    tx = optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(
            schedule,
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        ),
    )
    return tx, schedule


def init_state(config: Config, tx: optax.GradientTransformation) -> dict:
    """A fresh training state: parameters seeded by ``config.seed``, ``tx``'s optimizer state, step 0 and
    the RNG key dropout keys are derived from.

    Pure: the trainer jits it with output shardings; a checkpoint reader ``jax.eval_shape``s it for the
    shapes to restore into.
    """
    params = nnx.to_pure_dict(nnx.state(model_lib.create(config.model, config.seed), nnx.Param))
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "rng": jax.random.fold_in(jax.random.PRNGKey(config.seed), 1),
    }
