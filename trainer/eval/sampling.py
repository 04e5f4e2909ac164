"""Using a trained model: load a checkpoint, and draw grammar-constrained samples with a KV cache.

* :func:`load` restores the parameters of the latest (or a given) checkpoint of a training workdir,
  with the config the run was trained with.
* :class:`Sampler` holds two jitted functions over :meth:`trainer.model.Decoder.decode`: a prefill of a
  batch of prompts and a one-token step. Lengths are rounded up to buckets so a whole evaluation
  compiles a handful of shapes, not one per prompt.
* :func:`sample` continues each prompt ``num_samples`` times until the measurement it ends in is
  complete. At every step the logits of tokens the grammar of the model's tokenizer scheme
  (``tokenizer.get_scheme(name).grammar``) forbids are set to -inf, so every sample decodes. Each prompt is prefilled once; its samples attend to that one cache
  (:meth:`trainer.model.Decoder.decode_shared`) plus a small cache of their own tokens, so the cost of
  a step does not grow with samples x prompt length.
  Draws come from a numpy Generator seeded by ``(seed, prompt id)``, so a prompt's random numbers do not
  depend on which other prompts share its batch (its logits may, in the last float bits, through padding).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from beam_pipelines.common.errors import InputError, UsageError
from tokenizer import get_scheme
from trainer import model as model_lib
from trainer.checkpoint import Checkpointer
from trainer.config import Config, from_saved
from trainer.train_state import init_state, make_optimizer

CHECKPOINT_DIR = "checkpoints"  # as trainer.train writes it
LENGTH_BUCKET = 64  # prompt and cache lengths are rounded up to a multiple of this
NEW_BUCKET = 8  # the samples' own caches are rounded up to a multiple of this


class CheckpointError(InputError):
    """A workdir without a usable checkpoint (exit code 2, as every missing input)."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """Parameters of one checkpoint and the config the run was trained with."""

    config: Config
    graphdef: nnx.GraphDef
    params: dict
    step: int
    fingerprint: str | None  # the training dataset's fingerprint

    def model(self) -> model_lib.Decoder:
        return nnx.merge(self.graphdef, self.params)


def load(workdir: str, step: int | None = None) -> LoadedModel:
    """The parameters of ``workdir``'s latest complete checkpoint (or of ``step``).

    Raises :class:`CheckpointError` when ``workdir`` holds no checkpoint.
    """
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{workdir}: no {CHECKPOINT_DIR}/ directory; is this a training workdir?")
    ckpt = Checkpointer(directory, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise CheckpointError(f"{directory}: no complete checkpoint")
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise CheckpointError(f"{directory}: no checkpoint for step {step} (have {sorted(steps)})")
        meta = ckpt.read_meta(step)
        config = from_saved(meta["config"])
        # The checkpoint holds the whole training state; rebuild its abstract shape as the trainer does.
        tx, _ = make_optimizer(config)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
            jax.eval_shape(lambda: init_state(config, tx)),
        )
        state, _ = ckpt.restore(step, abstract)
    finally:
        ckpt.close()
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_lib.create(config.model, 0)))
    return LoadedModel(config, graphdef, state["params"], int(step), meta.get("fingerprint"))


def check_decodable(name: str, workdir: str) -> None:
    """Refuse (UsageError, exit 2) a checkpoint of a tokenizer scheme without a constrained-decoding grammar:
    the model's RTT prompts and samples need one (v1 and v2 have theirs)."""
    if get_scheme(name).grammar is None:
        raise UsageError(
            f"{workdir}: the checkpoint's tokenizer {name} has no constrained-decoding grammar yet, which the model's "
            f"evaluation and prediction need; trainer.evaluate --baselines_only reads {name} datasets"
        )


def round_up(n: int, size: int = LENGTH_BUCKET) -> int:
    """``n`` rounded up to a multiple of ``size`` (at least ``size``): few shapes, few compilations."""
    return max(size, math.ceil(n / size) * size)


class Sampler:
    """Jitted functions of one model: :meth:`prefill` a batch of prompts, then either :meth:`step` over
    a cache with one row per sequence (``Decoder.decode``) or :meth:`step_shared` for many samples per
    prompt over the prompts' one cache (``Decoder.decode_shared``, what :func:`sample` uses)."""

    def __init__(self, graphdef: nnx.GraphDef, params: dict, tokenizer: str = "v1"):
        self.graphdef, self.params = graphdef, params
        self.scheme = get_scheme(tokenizer)  # the model's tokenizer scheme: its grammar, PAD and vocabulary
        self.pad_id = self.scheme.pad_id

        def prefill(params, tokens, lengths, slots_like):
            model = nnx.merge(graphdef, params)
            b, p = tokens.shape
            cache = model.init_cache(b, slots_like.shape[0])
            positions = jnp.broadcast_to(jnp.arange(p), (b, p))  # (batch, prompt)
            logits, cache = model.decode(tokens, positions, cache)  # (batch, prompt, vocab)
            last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]  # (batch, vocab)
            return last, cache

        def step(params, tokens, positions, cache):
            model = nnx.merge(graphdef, params)
            logits, cache = model.decode(tokens[:, None], positions[:, None], cache)  # (batch, 1, vocab)
            return logits[:, 0], cache  # (batch, vocab)

        def step_shared(params, tokens, positions, prefix, prefix_len, cache):
            model = nnx.merge(graphdef, params)
            logits, cache = model.decode_shared(tokens[:, None], positions[:, None], prefix, prefix_len, cache)
            return logits[:, 0], cache  # (rows, vocab)

        def over(params, tokens, positions, last, prefixes, row_offset, cache):
            model = nnx.merge(graphdef, params)
            logits, cache = model.decode_over(tokens, positions, prefixes, row_offset, cache)  # (rows, new, vocab)
            return jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0], cache  # (rows, vocab)

        def tree(params, tokens, positions, segment, visible, pick):
            return nnx.merge(graphdef, params).decode_tree(tokens, positions, segment, visible, pick)

        self._prefill = jax.jit(prefill)
        self._over = jax.jit(over, donate_argnums=(6,))
        self._tree = jax.jit(tree)
        self._step = jax.jit(step, donate_argnums=(3,))
        self._step_shared = jax.jit(step_shared, donate_argnums=(5,))
        self._cfg = nnx.merge(graphdef, params).cfg  # the ModelConfig, for cache shapes

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> Sampler:
        return cls(loaded.graphdef, loaded.params, loaded.config.tokenizer)

    def prefill(self, prompts: Sequence[np.ndarray], slots: int | None = None) -> tuple[np.ndarray, dict]:
        """Logits after each prompt ((B, vocab) numpy) and a cache of ``slots`` positions holding the prompts
        (default: the longest prompt's length rounded up to ``LENGTH_BUCKET``).

        Prompts are right-padded to a common bucketed length; a padded tail's cache slots are stale but
        never attended to (positions continue from each prompt's own length).
        """
        lengths = np.array([len(p) for p in prompts], dtype=np.int32)
        if lengths.min() < 1:
            raise ValueError("empty prompt")
        slots = round_up(int(lengths.max())) if slots is None else slots
        width = min(round_up(int(lengths.max())), slots)
        tokens = np.full((len(prompts), width), self.pad_id, dtype=np.int32)  # (B, width); PAD opens no block
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = p
        last, cache = self._prefill(self.params, tokens, lengths, np.zeros(slots, np.int8))
        return np.asarray(last), cache

    def step(self, tokens: np.ndarray, positions: np.ndarray, cache: dict) -> tuple[np.ndarray, dict]:
        """Logits ((B, vocab) numpy) after feeding one token per row at ``positions``; the updated cache."""
        logits, cache = self._step(self.params, np.asarray(tokens, np.int32), np.asarray(positions, np.int32), cache)
        return np.asarray(logits), cache

    def new_cache(self, prefix: dict, samples: int, slots: int) -> dict:
        """An empty cache for the own tokens of ``samples`` continuations of each prompt of ``prefix`` (from
        :meth:`prefill`): k and v (layers, prompts * samples, slots, heads, head_dim), rows grouped by
        prompt, and each row's block state, its prompt's."""
        cache = model_lib.empty_cache(self._cfg, prefix["block"].shape[0] * samples, slots)
        cache["block"] = jnp.repeat(prefix["block"], samples)  # (rows,)
        return cache

    def empty_cache(self, rows: int, slots: int) -> dict:
        """An empty cache of ``rows`` rows of ``slots`` positions (``trainer.model.empty_cache``)."""
        return model_lib.empty_cache(self._cfg, rows, slots)

    def decode_tree(self, tokens, positions, segment, visible, pick) -> tuple[np.ndarray, dict]:
        """A shared beginning and its continuations in one pass (``Decoder.decode_tree``): logits ((n, vocab)
        numpy) at ``pick`` and the cache."""
        logits, cache = self._tree(self.params, *(np.asarray(a, np.int32) for a in (tokens, positions, segment,
                                                                                 visible, pick)))
        return np.asarray(logits), cache

    def decode_over(self, tokens, positions, last, prefixes, row_offset, cache: dict) -> tuple[np.ndarray, dict]:
        """Logits ((rows, vocab) numpy) after each row's new token at index ``last`` (rows,), of ``tokens`` (rows,
        new) at ``positions`` over shared caches read by runs of rows (``Decoder.decode_over``); the cache."""
        prefixes = [(shared, np.asarray(visible, np.int32)) for shared, visible in prefixes]
        logits, cache = self._over(self.params, np.asarray(tokens, np.int32), np.asarray(positions, np.int32),
                                   np.asarray(last, np.int32), prefixes, np.asarray(row_offset, np.int32), cache)
        return np.asarray(logits), cache

    def step_shared(self, tokens, positions, prefix: dict, prefix_len, cache: dict) -> tuple[np.ndarray, dict]:
        """:meth:`step` for rows grouped by prompt over the prompts' shared cache (see ``Decoder.decode_shared``)."""
        logits, cache = self._step_shared(
            self.params, np.asarray(tokens, np.int32), np.asarray(positions, np.int32), prefix,
            np.asarray(prefix_len, np.int32), cache,
        )
        return np.asarray(logits), cache


def current_measurement(prompt: Sequence[int], tokenizer: str = "v1") -> np.ndarray:
    """The tokens of the (unfinished) measurement a prompt ends in, with what decoding it needs
    (``Scheme.current_measurement``: v1 from its last MeasurementStart, v2 from its run's source header)."""
    return get_scheme(tokenizer).current_measurement(prompt)


def sample(
    sampler: Sampler,
    prompts: Sequence[Sequence[int]],
    num_samples: int,
    *,
    seed: int = 0,
    prompt_ids: Sequence[int] | None = None,
    temperature: float = 1.0,
) -> list[np.ndarray]:
    """Complete the measurement each prompt ends in, ``num_samples`` times per prompt.

    A prompt is whole measurements (context, e.g. the earlier part of a record) followed by the
    beginning of one measurement, at least its MeasurementStart; positions start at 0. Returns, per
    prompt, the generated tokens (num_samples, n_new), right-padded with PAD where rows finish at
    different lengths (a sampled address family). ``temperature`` 0 takes the most likely allowed token.
    Raises :class:`~tokenizer.grammar.GrammarError` if a prompt's last measurement breaks the grammar or
    is already complete. The grammar, PAD and vocabulary are those of the sampler's tokenizer scheme.
    """
    scheme = sampler.scheme
    grammar = scheme.grammar
    pad = scheme.pad_id
    prompts = [np.asarray(p, dtype=np.int64) for p in prompts]
    prompt_ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    n, s = len(prompts), num_samples
    states = []
    for p in prompts:
        state = scheme.sample_state(p)
        if state.done[0]:
            raise grammar.GrammarError("the prompt's last measurement is already complete")
        states.append(state)
    rows = np.repeat(np.arange(n), s)  # (n * s,) prompt of each row
    fields = [f.name for f in dataclasses.fields(grammar.State)]
    state = grammar.State(**{f: np.concatenate([getattr(st, f) for st in states])[rows] for f in fields})
    lengths = np.array([len(p) for p in prompts])
    longest_new = int(max(grammar.tokens_left(st)[0] for st in states))
    logits, prefix = sampler.prefill(prompts)  # (n, vocab); prefix (layers, n, slots, heads, head_dim)
    logits = np.repeat(logits, s, axis=0)  # (n * s, vocab)
    cache = sampler.new_cache(prefix, s, round_up(longest_new, NEW_BUCKET))  # the samples' own tokens
    gens = [np.random.default_rng([seed, int(i)]) for i in prompt_ids]
    out = np.full((n * s, longest_new), pad, dtype=np.int64)  # (n * s, new)
    positions = np.repeat(lengths, s)  # (n * s,) position of the next token of each row
    for t in range(longest_new):
        active = ~state.done
        if not active.any():
            out = out[:, :t]
            break
        masked = np.where(grammar.allowed(state), logits.astype(np.float64), -np.inf)  # (n * s, vocab)
        if temperature > 0:
            noise = np.concatenate([g.gumbel(size=(s, scheme.vocab_size)) for g in gens])  # (n * s, vocab)
            tokens = np.argmax(masked / temperature + noise, axis=1)
        else:
            tokens = np.argmax(masked, axis=1)
        tokens = np.where(active, tokens, pad)
        out[:, t] = tokens
        state = grammar.advance(state, tokens, active)
        if state.done.all():
            out = out[:, : t + 1]
            break
        fed = np.where(active, tokens, scheme.restart_id)  # finished rows feed a harmless token
        logits, cache = sampler.step_shared(fed, positions, prefix, lengths, cache)
        positions = positions + 1
    return [out[i * s : (i + 1) * s] for i in range(n)]


def complete_measurements(prompt: Sequence[int], generated: np.ndarray, tokenizer: str = "v1") -> list[np.ndarray]:
    """The whole measurements of one prompt's samples: its last measurement's prefix (:func:`current_measurement`)
    + each sample's tokens (``tokenizer``: the sampler's scheme)."""
    scheme = get_scheme(tokenizer)
    head = scheme.current_measurement(prompt)
    return [np.concatenate([head, row[row != scheme.pad_id]]) for row in np.asarray(generated)]
