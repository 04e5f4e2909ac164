"""A lean decoder-only Transformer in Flax NNX.

Token embedding (one row per id of the dataset's scheme) + field embedding -> N x [pre-norm RMSNorm -> causal self-attention with RoPE
-> residual, pre-norm RMSNorm -> SwiGLU MLP -> residual] -> final RMSNorm -> untied output projection.
Attention spans the whole 1024-token record: context across measurements is the point.

Parameters are float32; ``ModelConfig.dtype`` sets the compute dtype (float32 or bfloat16). Logits are
returned in float32. The output projection starts tiny so a fresh model predicts a near-uniform
distribution and its first loss is close to ln(vocabulary size) (5.587 for scheme v1). Linear layers have no biases.

The field embedding (``ModelConfig.field_embedding``) adds to every token a learned vector for *where it is
in its measurement*: the role of the block it belongs to (the last block-start token at or before it) and
its offset inside that block. It is computed causally from the token ids alone, so it is the same
function of the prefix in training, evaluation and sampling. Why: the field order of every measurement is
shuffled, so without it the model must first learn a two-step lookup (find the block's role token, count
bytes since) before it can relate, say, an RTT to the destination's first address byte; with it that is
one content match. On the bundled sample it is what lets a ``tiny`` model learn the destination -> RTT
dependence within a few hundred steps (docs/evaluation.md, "Real runs on the bundled sample").

For sampling, ``Decoder.decode`` runs the same layers over a KV cache (tokens at explicit positions, the
same RoPE), and ``Decoder.decode_shared`` lets many continuations of a prompt read one copy of the
prompt's cache; neither changes the parameters or the training forward (``trainer.eval.sampling`` uses them).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from tokenizer import get_scheme
from tokenizer.schemes import FieldSpec
from trainer.config import ModelConfig

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# Field embedding: the kind of a token's block (what the id that opened it opens, or the scheme's "no block
# yet" kind before the first) and the token's offset in that block, clipped to the scheme's max offset (past
# the end of a record's last block: padding). The layout is the tokenizer scheme's (``Scheme.field_spec``,
# chosen by ``ModelConfig.tokenizer``); the module-level names below are v1's, the default.
_V1_FIELDS = get_scheme("v1").field_spec
NO_FIELD = _V1_FIELDS.kinds
MAX_OFFSET = _V1_FIELDS.max_offset
FIELD_ROWS = _V1_FIELDS.rows
_QUERY_CHUNK = 256  # Attention.prefill_masked's queries per piece
_CODE = 16  # a block start is carried as position * _CODE + kind; every scheme's kinds (and "none") are < _CODE
EMPTY_BLOCK_STATE = -1 * _CODE + NO_FIELD  # "no block start seen yet", below every real code


def field_spec(cfg: ModelConfig) -> FieldSpec:
    """The field layout of the model's tokenizer scheme."""
    spec = get_scheme(cfg.tokenizer).field_spec
    if spec.kinds >= _CODE:
        raise ValueError(f"tokenizer {cfg.tokenizer}: {spec.kinds} block kinds do not fit the block state code")
    return spec


def empty_block_state(spec: FieldSpec) -> int:
    """The block state before any block start ("none yet"), below every real code."""
    return -1 * _CODE + spec.kinds


def field_ids(tokens: jax.Array, positions: jax.Array, state: jax.Array, spec: FieldSpec = _V1_FIELDS
              ) -> tuple[jax.Array, jax.Array]:
    """Field-embedding row of every token, and the block state after the last one.

    ``tokens`` and ``positions`` are (batch, new); ``state`` (batch,) encodes the last block start before
    these tokens (:func:`empty_block_state` for none). Positions increase along a row, so the latest block
    start at or before each token is a running maximum of ``position * 16 + kind``. Returns the rows
    (batch, new) into a (``spec.rows``, width) table and the new state (batch,).
    """
    code = _block_codes(tokens, positions, state, spec)  # (batch, new)
    role = jnp.remainder(code, _CODE)  # (batch, new)
    offset = jnp.clip(positions - jnp.floor_divide(code, _CODE), 0, spec.max_offset)  # (batch, new)
    return role * (spec.max_offset + 1) + offset, code[:, -1]


def _block_codes(tokens: jax.Array, positions: jax.Array, state: jax.Array, spec: FieldSpec) -> jax.Array:
    """(batch, new) the block state at every token: the code of the last block start at or before it."""
    kind = jnp.asarray(spec.block_kind)[tokens]  # (batch, new) the kind a token opens, -1 for none
    code = jnp.where(kind >= 0, positions * _CODE + kind, state[:, None])  # (batch, new)
    return jax.lax.cummax(code, axis=1)


def attention_kernel(cfg: ModelConfig) -> str:
    """The ``jax.nn.dot_product_attention`` implementation of the training forward for ``cfg.attention``.

    ``auto`` takes cuDNN's fused flash attention on a GPU in bfloat16 (it never materialises the
    (seq x seq) score matrix: less memory and, measured in docs/performance.md, "100m on one NVIDIA H200",
    faster) and XLA's elsewhere. The cached decode paths always use XLA's, which takes their explicit masks.
    """
    if cfg.attention != "auto":
        return cfg.attention
    return "cudnn" if jax.default_backend() == "gpu" and cfg.dtype == "bfloat16" else "xla"


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def rope(x: jax.Array, theta: float, positions: jax.Array | None = None) -> jax.Array:
    """Rotary position embedding (rotate-half form) over the last axis of x: (batch, seq, heads, head_dim).

    ``positions`` (batch, seq) gives each token's position (the cached decode path); None means
    ``0..seq-1`` for every row (the training forward).
    """
    seq, head_dim = x.shape[1], x.shape[-1]
    half = head_dim // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)  # (half,)
    if positions is None:
        angles = jnp.arange(seq, dtype=jnp.float32)[:, None] * freqs[None, :]  # (seq, half)
        sin = jnp.sin(angles)[None, :, None, :]  # (1, seq, 1, half)
        cos = jnp.cos(angles)[None, :, None, :]  # (1, seq, 1, half)
    else:
        angles = positions.astype(jnp.float32)[:, :, None] * freqs[None, None, :]  # (batch, seq, half)
        sin = jnp.sin(angles)[:, :, None, :]  # (batch, seq, 1, half)
        cos = jnp.cos(angles)[:, :, None, :]  # (batch, seq, 1, half)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)  # (batch, seq, heads, half)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)  # (batch, seq, heads, head_dim)
    return out.astype(x.dtype)


class Attention(nnx.Module):
    """Causal multi-head self-attention with RoPE on queries and keys."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = _DTYPES[cfg.dtype]
        self.cfg = cfg
        self.qkv = nnx.Linear(cfg.width, 3 * cfg.width, use_bias=False, dtype=dtype, rngs=rngs)
        out_init = nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers))
        self.out = nnx.Linear(cfg.width, cfg.width, use_bias=False, dtype=dtype, kernel_init=out_init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        n, h = self.cfg.num_heads, self.cfg.head_dim
        qkv = self.qkv(x).reshape(b, t, 3, n, h)  # (batch, seq, 3, heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (batch, seq, heads, head_dim)
        q, k = rope(q, self.cfg.rope_theta), rope(k, self.cfg.rope_theta)
        y = jax.nn.dot_product_attention(
            q, k, v, is_causal=True, implementation=attention_kernel(self.cfg)
        )  # (batch, seq, heads, head_dim)
        return self.out(y.reshape(b, t, n * h))  # (batch, seq, width)

    def decode(
        self, x: jax.Array, positions: jax.Array, cache_k: jax.Array, cache_v: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Attention of new tokens x (batch, new, width) at ``positions`` (batch, new) over a KV cache.

        The cache holds the keys and values of position p in slot p: (batch, slots, heads, head_dim).
        The new keys and values are written to their slots first, then each query attends to slots
        ``<= its position``. Slots past a row's position may hold stale values (a padded prefill); they
        are never attended to and are overwritten when that position is decoded.
        """
        b, t, _ = x.shape
        n, h = self.cfg.num_heads, self.cfg.head_dim
        slots = cache_k.shape[1]
        qkv = self.qkv(x).reshape(b, t, 3, n, h)  # (batch, new, 3, heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (batch, new, heads, head_dim)
        q, k = rope(q, self.cfg.rope_theta, positions), rope(k, self.cfg.rope_theta, positions)
        rows = jnp.arange(b)[:, None]  # (batch, 1)
        cache_k = cache_k.at[rows, positions].set(k.astype(cache_k.dtype), mode="drop")  # (batch, slots, heads, hd)
        cache_v = cache_v.at[rows, positions].set(v.astype(cache_v.dtype), mode="drop")  # (batch, slots, heads, hd)
        mask = jnp.arange(slots)[None, None, None, :] <= positions[:, None, :, None]  # (batch, 1, new, slots)
        y = jax.nn.dot_product_attention(q, cache_k, cache_v, mask=mask)  # (batch, new, heads, head_dim)
        return self.out(y.reshape(b, t, n * h)), cache_k, cache_v  # (batch, new, width)

    def decode_shared(self, x, positions, prefixes, row_offset, cache_k, cache_v):
        """:meth:`decode` for rows that continue shared caches, without copying those caches per row.

        ``prefixes`` is a sequence of ``(k, v, visible)``: ``k`` and ``v`` (groups, slots, heads, head_dim) are
        read by equal runs of consecutive rows (row ``r`` reads group ``r // (rows // groups)``), and row ``r``
        sees their first ``visible[r]`` slots (``visible`` (rows,)), or (``visible`` (rows, 3)) their first
        ``visible[r, 0]`` slots and the slots from ``visible[r, 1]`` to before ``visible[r, 2]``.
        ``cache_k``/``cache_v`` (rows, slots, heads, head_dim) hold each row's own tokens, position ``p`` in slot
        ``p - row_offset[r]``; a query sees its own slots up to its own. Attention runs over all of them at once
        (one softmax), so the result equals attention over the visible slots and the row's tokens laid end to end.
        """
        b, t, _ = x.shape
        n, h = self.cfg.num_heads, self.cfg.head_dim
        qkv = self.qkv(x).reshape(b, t, 3, n, h)  # (rows, new, 3, heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (rows, new, heads, head_dim)
        q, k = rope(q, self.cfg.rope_theta, positions), rope(k, self.cfg.rope_theta, positions)
        slots = positions - row_offset[:, None]  # (rows, new) slot of each new token in the row's own cache
        rows = jnp.arange(b)[:, None]  # (rows, 1)
        cache_k = cache_k.at[rows, slots].set(k.astype(cache_k.dtype), mode="drop")  # (rows, slots, heads, hd)
        cache_v = cache_v.at[rows, slots].set(v.astype(cache_v.dtype), mode="drop")  # (rows, slots, heads, hd)
        qf = q.astype(jnp.float32) * (1.0 / math.sqrt(h))  # (rows, new, heads, hd)
        scores = []
        for pk, _, visible in prefixes:
            groups = pk.shape[0]
            per = b // groups
            s = jnp.einsum("gstnd,gknd->gstnk", qf.reshape(groups, per, t, n, h), pk.astype(jnp.float32))
            slot = jnp.arange(pk.shape[1])[None, :]  # (1, P)
            if visible.ndim == 1:  # the first visible[r] slots
                ok = slot < visible[:, None]  # (rows, P)
            else:  # (rows, 3): the first visible[r, 0] slots and slots visible[r, 1] <= k < visible[r, 2]
                ok = (slot < visible[:, :1]) | ((slot >= visible[:, 1:2]) & (slot < visible[:, 2:3]))
            s = jnp.where(ok.reshape(groups, per, 1, 1, -1), s, -1e30)  # (groups, per, new, heads, P)
            scores.append(s.reshape(b, t, n, -1))
        own = jnp.einsum("btnd,bknd->btnk", qf, cache_k.astype(jnp.float32))  # (rows, new, heads, S)
        own_ok = jnp.arange(cache_k.shape[1])[None, None, :] <= slots[:, :, None]  # (rows, new, S)
        scores.append(jnp.where(own_ok[:, :, None, :], own, -1e30))
        probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)  # (rows, new, heads, sum of slots)
        y = jnp.zeros((b, t, n, h), jnp.float32)
        at = 0
        for pk, pv, _ in [*prefixes, (cache_k, cache_v, None)]:  # each part's share of the one softmax
            groups, width = pk.shape[0], pk.shape[1]
            p = probs[..., at : at + width].reshape(groups, b // groups, t, n, width)
            y = y + jnp.einsum("gstnk,gknd->gstnd", p, pv.astype(jnp.float32)).reshape(b, t, n, h)
            at += width
        return self.out(y.astype(x.dtype).reshape(b, t, n * h)), cache_k, cache_v  # (rows, new, width)

    def prefill_masked(
        self, x: jax.Array, positions: jax.Array, mask: jax.Array, pick: jax.Array | None = None
    ) -> tuple[jax.Array, ...]:
        """Attention of a whole sequence x (batch, seq, width) at ``positions`` (batch, seq) under an explicit
        ``mask`` (batch, seq, seq) that sees no later index (query ``a`` sees key ``b <= a`` where
        ``mask[:, a, b]``). Returns the output (batch, seq, width), or with ``pick`` ((n, 2) of (row, index))
        only the output of those queries (n, width), and the sequence's keys and values (batch, seq, heads,
        head_dim), a cache with slot = index.
        """
        b, t, _ = x.shape
        n, h = self.cfg.num_heads, self.cfg.head_dim
        qkv = self.qkv(x).reshape(b, t, 3, n, h)  # (batch, seq, 3, heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (batch, seq, heads, head_dim)
        q, k = rope(q, self.cfg.rope_theta, positions), rope(k, self.cfg.rope_theta, positions)
        if pick is not None:  # a few queries, each over its row's keys
            rows, at = pick[:, 0], pick[:, 1]
            y = jax.nn.dot_product_attention(
                q[rows, at][:, None], k[rows], v[rows], mask=mask[rows, at][:, None, None, :]
            )  # (n, 1, heads, head_dim)
            return self.out(y.reshape(-1, n * h)), k, v
        # Queries in chunks, each over the keys up to its last index (no query sees a later one): about half
        # the score matrix of a long sequence, which is most of the memory traffic here.
        parts = []
        for lo in range(0, t, _QUERY_CHUNK):
            hi = min(t, lo + _QUERY_CHUNK)
            parts.append(jax.nn.dot_product_attention(
                q[:, lo:hi], k[:, :hi], v[:, :hi], mask=mask[:, None, lo:hi, :hi]
            ))  # (batch, chunk, heads, head_dim)
        y = jnp.concatenate(parts, axis=1)  # (batch, seq, heads, head_dim)
        return self.out(y.reshape(b, t, n * h)), k, v


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), three width x mlp_dim matrices."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = _DTYPES[cfg.dtype]
        self.gate = nnx.Linear(cfg.width, cfg.mlp_dim, use_bias=False, dtype=dtype, rngs=rngs)
        self.up = nnx.Linear(cfg.width, cfg.mlp_dim, use_bias=False, dtype=dtype, rngs=rngs)
        down_init = nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers))
        self.down = nnx.Linear(cfg.mlp_dim, cfg.width, use_bias=False, dtype=dtype, kernel_init=down_init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))  # (batch, seq, width)


class Block(nnx.Module):
    """Pre-norm Transformer block."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = _DTYPES[cfg.dtype]
        self.rate = cfg.dropout
        self.attn_norm = nnx.RMSNorm(cfg.width, dtype=dtype, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = nnx.RMSNorm(cfg.width, dtype=dtype, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        k1, k2 = jax.random.split(key) if key is not None else (None, None)
        x = x + _dropout(self.attn(self.attn_norm(x)), self.rate, k1)
        return x + _dropout(self.mlp(self.mlp_norm(x)), self.rate, k2)

    def decode(self, x, positions, cache_k, cache_v):
        """:meth:`__call__` without dropout, attending over a KV cache (see :meth:`Attention.decode`)."""
        y, cache_k, cache_v = self.attn.decode(self.attn_norm(x), positions, cache_k, cache_v)
        x = x + y
        return x + self.mlp(self.mlp_norm(x)), cache_k, cache_v

    def decode_shared(self, x, positions, prefixes, row_offset, cache_k, cache_v):
        """:meth:`decode` over shared caches (see :meth:`Attention.decode_shared`)."""
        y, cache_k, cache_v = self.attn.decode_shared(
            self.attn_norm(x), positions, prefixes, row_offset, cache_k, cache_v
        )
        x = x + y
        return x + self.mlp(self.mlp_norm(x)), cache_k, cache_v

    def prefill_masked(self, x, positions, mask, pick=None):
        """The block over a whole sequence under an explicit mask, or only at ``pick`` (see
        :meth:`Attention.prefill_masked`)."""
        y, k, v = self.attn.prefill_masked(self.attn_norm(x), positions, mask, pick)
        if pick is not None:
            x = x[pick[:, 0], pick[:, 1]]  # (n, width)
        x = x + y
        return x + self.mlp(self.mlp_norm(x)), k, v


class Decoder(nnx.Module):
    """The ping-llm decoder: token ids (batch, seq) -> float32 logits (batch, seq, vocab)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = _DTYPES[cfg.dtype]
        self.cfg = cfg
        self.embed = nnx.Embed(
            cfg.vocab_size, cfg.width, dtype=dtype, embedding_init=nnx.initializers.normal(1.0), rngs=rngs
        )
        self.field = (
            nnx.Embed(field_spec(cfg).rows, cfg.width, dtype=dtype, embedding_init=nnx.initializers.normal(1.0), rngs=rngs)
            if cfg.field_embedding
            else None
        )
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = nnx.RMSNorm(cfg.width, dtype=dtype, rngs=rngs)
        # A tiny readout keeps the first logits near zero: near-uniform predictions, loss ~ ln(vocab).
        head_init = nnx.initializers.normal(0.02 / math.sqrt(cfg.width))
        self.head = nnx.Linear(cfg.width, cfg.vocab_size, use_bias=False, dtype=dtype, kernel_init=head_init, rngs=rngs)

    def __call__(self, tokens: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        """``dropout_key`` None means no dropout (evaluation)."""
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t), (b, t))  # (batch, seq)
        empty = jnp.full((b,), empty_block_state(field_spec(self.cfg)), jnp.int32)
        x, _ = self._embed(tokens, positions, empty)  # (batch, seq, width)
        for i, block in enumerate(self.blocks):
            key = jax.random.fold_in(dropout_key, i) if dropout_key is not None else None
            x = block(x, key)  # (batch, seq, width)
        return self.head(self.norm(x)).astype(jnp.float32)  # (batch, seq, vocab)

    def _embed(self, tokens: jax.Array, positions: jax.Array, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Input vectors (batch, new, width) of tokens at positions, and the block state after them."""
        x = self.embed(tokens)  # (batch, new, width)
        if self.field is None:  # the block state only feeds the field embedding
            return x, state
        rows, state = field_ids(tokens, positions, state, field_spec(self.cfg))  # (batch, new), (batch,)
        return x + self.field(rows), state  # (batch, new, width)

    def init_cache(self, batch: int, slots: int) -> dict:
        """:func:`empty_cache` for this model."""
        return empty_cache(self.cfg, batch, slots)

    def decode(self, tokens: jax.Array, positions: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
        """Cache-aware forward for sampling: logits of ``tokens`` (batch, new) at ``positions`` (batch, new).

        Returns float32 logits (batch, new, vocab) and the cache with these tokens' keys and values
        written to their positions' slots. Feeding a record in pieces (a prompt, then one token at a
        time, positions continuing where the last piece stopped) gives the logits of :meth:`__call__`
        on the whole record, within float tolerance: same parameters, same RoPE positions, no dropout.
        Tokens that pad a prompt on the right must not be block starts (use PAD), so that the cache's
        block state is the prompt's own.
        """
        x, block_state = self._embed(tokens, positions, cache["block"])  # (batch, new, width), (batch,)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block.decode(x, positions, cache["k"][i], cache["v"][i])  # x: (batch, new, width)
            ks.append(k)
            vs.append(v)
        logits = self.head(self.norm(x)).astype(jnp.float32)  # (batch, new, vocab)
        # k, v: (layers, batch, slots, heads, head_dim); block: (batch,)
        return logits, {"k": jnp.stack(ks), "v": jnp.stack(vs), "block": block_state}

    def decode_shared(
        self, tokens: jax.Array, positions: jax.Array, prefix: dict, prefix_len: jax.Array, cache: dict
    ) -> tuple[jax.Array, dict]:
        """:meth:`decode` for ``samples`` continuations of each of a few prompts (rows grouped by prompt).

        ``prefix`` is the prompts' cache from :meth:`decode` (layers, prompts, slots, heads, head_dim), read
        but never copied per row; ``prefix_len`` (prompts,) their lengths; ``cache`` (layers, rows, slots,
        heads, head_dim) each row's own tokens from position ``prefix_len`` on, and ``"block"`` (rows,) each
        row's block state (its prompt's to begin with). Returns float32 logits (rows, new, vocab) and the
        updated row cache. Equal, within float tolerance, to :meth:`decode` with the prompt's cache repeated
        for every row, at a fraction of the memory traffic.
        """
        row_len = jnp.repeat(prefix_len, tokens.shape[0] // prefix_len.shape[0])  # (rows,)
        return self.decode_over(tokens, positions, [(prefix, row_len)], row_len, cache)

    def decode_over(
        self, tokens: jax.Array, positions: jax.Array, prefixes, row_offset: jax.Array, cache: dict
    ) -> tuple[jax.Array, dict]:
        """:meth:`decode` of rows that read several shared caches, none copied per row (the general form of
        :meth:`decode_shared`; :func:`trainer.eval.quantiles.shared_logits_fn` reads a record's cache and a
        measurement's own tokens this way).

        ``prefixes``: a sequence of ``(shared, visible)``; ``shared`` a cache from :meth:`decode` or this
        method (layers, groups, slots, heads, head_dim) whose group ``g`` is read by the ``g``-th of equal runs
        of consecutive rows, ``visible`` which of its slots each row sees (see
        :meth:`Attention.decode_shared`). ``cache`` holds
        each row's own tokens, position ``p`` in slot ``p - row_offset[r]``, and ``"block"`` (rows,) each row's
        block state. Returns float32 logits (rows, new, vocab) and the updated row cache.
        """
        x, block_state = self._embed(tokens, positions, cache["block"])  # (rows, new, width), (rows,)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            layer = [(shared["k"][i], shared["v"][i], visible) for shared, visible in prefixes]
            x, k, v = block.decode_shared(x, positions, layer, row_offset, cache["k"][i], cache["v"][i])
            ks.append(k)  # x: (rows, new, width)
            vs.append(v)
        logits = self.head(self.norm(x)).astype(jnp.float32)  # (rows, new, vocab)
        # k, v: (layers, rows, slots, heads, head_dim); block: (rows,)
        return logits, {"k": jnp.stack(ks), "v": jnp.stack(vs), "block": block_state}


    def decode_tree(
        self, tokens: jax.Array, positions: jax.Array, segment: jax.Array, visible: jax.Array, pick: jax.Array
    ) -> tuple[jax.Array, dict]:
        """One pass over a shared beginning and several continuations of it, each seeing its own part of the
        beginning: a cache for :meth:`decode_over` without running the beginning once per continuation.

        Row ``g`` of ``tokens`` (groups, seq) is a beginning (``segment`` 0, positions 0, 1, ...) followed by
        continuations (``segment`` 1, 2, ... in order, each opening with a block start, positions increasing
        within each and from one to the next), then padding (``segment`` -1). A beginning token sees the
        beginning up to itself; a continuation token sees the beginning's first ``visible`` (groups, seq)
        tokens and its own continuation up to itself. Returns float32 logits at ``pick`` ((n, 2) of (row,
        index)) as (n, vocab), and the cache: keys and values (layers, groups, seq, heads, head_dim), slot =
        index, and ``"block"`` (n,) the block state after each picked token (what a continuation of it carries).
        """
        spec = field_spec(self.cfg)
        b, t = tokens.shape
        idx = jnp.arange(t)
        same = (segment[:, None, :] == segment[:, :, None]) & (segment[:, :, None] != 0)  # (groups, query, key)
        own = same & (idx[None, None, :] <= idx[None, :, None])
        begin = (segment[:, None, :] == 0) & (idx[None, None, :] < visible[:, :, None])
        mask = own | begin  # (groups, seq, seq)
        # Field embedding: each continuation reads its own blocks; the segment keeps an earlier part's block
        # starts (larger positions in the beginning) out of its running maximum, and cancels in the offset.
        # Segments must stay below 2**11 for the code to fit int32.
        stride = jnp.int32(1 << 16)
        empty = jnp.full((b,), empty_block_state(spec), jnp.int32)
        x, _ = self._embed(tokens, segment * stride + positions, empty)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            # The last block's keys and values are all the cache needs; its output only at the picked tokens.
            x, k, v = block.prefill_masked(x, positions, mask, pick if i == len(self.blocks) - 1 else None)
            ks.append(k)  # x: (groups, seq, width), after the last block (n, width)
            vs.append(v)
        logits = self.head(self.norm(x)).astype(jnp.float32)  # (n, vocab)
        # Each picked token's block state, at its true position: its part's own block start, minus the shift.
        rows, at = pick[:, 0], pick[:, 1]
        code = _block_codes(tokens, segment * stride + positions, empty, spec)[rows, at]  # (n,)
        block = code - segment[rows, at] * stride * _CODE
        return logits, {"k": jnp.stack(ks), "v": jnp.stack(vs), "block": block}


def empty_cache(cfg: ModelConfig, batch: int, slots: int) -> dict:
    """An empty KV cache for ``batch`` rows of up to ``slots`` positions of a model with config ``cfg``.

    ``{"k", "v"}``, each (layers, batch, slots, heads, head_dim) in the compute dtype, and ``"block"``
    (batch,) int32, the last block start seen (none yet; see :func:`field_ids`).
    """
    shape = (cfg.num_layers, batch, slots, cfg.num_heads, cfg.head_dim)
    dtype = _DTYPES[cfg.dtype]
    block = jnp.full((batch,), empty_block_state(field_spec(cfg)), jnp.int32)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype), "block": block}


def create(cfg: ModelConfig, seed: int) -> Decoder:
    """A freshly initialised decoder."""
    return Decoder(cfg, rngs=nnx.Rngs(params=seed))


def abstract_params(cfg: ModelConfig) -> dict:
    """Parameter shapes (a pure dict of ``jax.ShapeDtypeStruct``) without allocating anything."""
    model = nnx.eval_shape(lambda: create(cfg, 0))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def count_params(cfg: ModelConfig) -> int:
    """Number of parameters, computed abstractly."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params(cfg)))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM-style: 6 * N_matmul + 12 * layers * seq * width.

    N_matmul counts the parameters that take part in matrix multiplies (all but the input and field
    embeddings, which are lookups, and the norm scales). The attention term counts the full (non-causal) score matrix,
    as the usual MFU convention does.
    """
    params = abstract_params(cfg)
    n_total = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    n_embed = (cfg.vocab_size + (field_spec(cfg).rows if cfg.field_embedding else 0)) * cfg.width
    n_norm = (2 * cfg.num_layers + 1) * cfg.width
    return 6.0 * (n_total - n_embed - n_norm) + 12.0 * cfg.num_layers * seq_len * cfg.width
