"""Exact quantiles of the model's RTT distribution by descent over the RTT's tokens: no sampling.

The model's distribution of an RTT factorises over its value tokens, ``p(x) = prod_t p(x_t | x_<t)``. When
the code is monotone (a token earlier in a position's value order always leads to a smaller value, as
v1's big-endian float64 is for non-negative values, and v2's log scale by design: the scheme object's
``rtt``, ``tokenizer.get_scheme(name).rtt``), the cumulative distribution
of the value is the cumulative distribution of the token sequence in lexicographic order, so a quantile
can be found one position at a time: at position ``t`` take the token where the cumulative probability of
the tokens in value order crosses the target, then look for the rest of the target inside that token's
mass (the target renormalised within the chosen prefix) at position ``t + 1``. After the last position the
tokens spell the smallest value ``x`` with ``F(x) >= q``: the exact ``q``-quantile of the model's
distribution (the lower quantile of a discrete distribution), up to float64 rounding of the cumulative sums.

* **Success and failure apart.** Position 0 splits the distribution: the scheme's failure tokens carry
  ``P(failure)``; the quantiles are of the RTT *given success*, walked among the success tokens only
  (:meth:`RttCode.success_mask`: v1 also leaves out infinity and NaN, so every quantile is a finite RTT
  that the scheme encodes). Probabilities are the model's next-token distribution renormalised over the
  tokens the grammar allows (as constrained sampling draws them), then over the success tokens.
* **Cost.** All quantiles of a batch of prompts walk together, one row per (prompt, quantile): one prefill
  of the prompts, then one cached step per remaining value token (``width - 1``), whatever the number of
  quantiles; deterministic, no random numbers.
* **Monotone in q.** Rows of one prompt that have chosen the same tokens so far read the *same* logits
  (the first such row's), so for ``q1 < q2`` the rounded arithmetic (monotone operations on equal
  numbers) cannot cross them: the quantiles are non-decreasing in ``q`` by construction.
* **The true value** (``truth=``) rides along as one more row per prompt, fed its own tokens (teacher
  forcing): its log-likelihood under the grammar-normalised distribution (of its exact tokens for a
  success, ``log P(failure)`` for a failure), and its probability integral transform ``F(x-) + P(x) / 2``
  under the success distribution (the "mid" PIT; NaN when the true RTT is a failure), which calibration
  figures need.

The descent is written against :class:`RttCode` and a ``logits_fn(prefix)`` (the next-token logits after
each row's prompt and value tokens so far), so tests can drive it with a hand-set distribution;
:func:`model_distribution` runs it on a checkpoint through :class:`~trainer.eval.sampling.Sampler`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from tokenizer import get_scheme
from trainer.eval.sampling import LENGTH_BUCKET, NEW_BUCKET, round_up

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)


class RttCode(Protocol):
    """What the descent needs to know about a scheme's RTT value tokens (``tokenizer.schemes.RttCodec``)."""

    role: int | None  # the token a prompt ends with, right before the value tokens (None: no such token)
    width: int  # value tokens of a successful RTT
    failure_tokens: np.ndarray  # (F,) first tokens that mean a failed ping

    def grammar_tokens(self, position: int) -> np.ndarray: ...  # (G,) tokens the grammar allows there

    def value_tokens(self, position: int) -> np.ndarray: ...  # (K,) success tokens in ascending value order

    def success_mask(self, prefix: np.ndarray) -> np.ndarray: ...  # (B, t) tokens so far -> (B, K) bool

    def decode(self, tokens: np.ndarray) -> np.ndarray: ...  # (..., width) -> (...) ms

    def encode(self, values: np.ndarray) -> np.ndarray: ...  # (n,) ms -> (n, width) tokens


@dataclasses.dataclass(frozen=True)
class RttDistribution:
    """The model's RTT distribution for n prompts, as :func:`descend` finds it."""

    quantiles: tuple[float, ...]  # the levels asked for, in the order asked
    values: np.ndarray  # (n, Q) float64 ms: the q-quantile of the RTT given success
    failure_probability: np.ndarray  # (n,) P(the ping fails)
    log_likelihood: np.ndarray | None = None  # (n,) ln P(the true RTT's exact tokens); ln P(failure) for one
    pit: np.ndarray | None = None  # (n,) mid PIT of the true RTT given success; NaN for a failure

    def quantile(self, q: float) -> np.ndarray:
        """(n,) the values of level ``q`` (one of :attr:`quantiles`)."""
        return self.values[:, self.quantiles.index(q)]

    def take(self, index) -> RttDistribution:
        """The prompts at ``index``."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return RttDistribution(self.quantiles, self.values[index], self.failure_probability[index],
                               pick(self.log_likelihood), pick(self.pit))

    @staticmethod
    def concat(parts: Sequence[RttDistribution], quantiles: Sequence[float]) -> RttDistribution:
        q = tuple(float(x) for x in quantiles)
        if not parts:
            return RttDistribution(q, np.zeros((0, len(q))), np.zeros(0))
        cat = lambda name: (None if getattr(parts[0], name) is None  # noqa: E731
                            else np.concatenate([getattr(p, name) for p in parts]))
        return RttDistribution(q, cat("values"), cat("failure_probability"), cat("log_likelihood"), cat("pit"))


def rtt_code_for(tokenizer: str | dict = "v1") -> RttCode:
    """The RTT code of a tokenizer scheme, by name or by a manifest's ``tokenizer`` entry: the scheme
    object's (``tokenizer.get_scheme(...).rtt``). Raises ``tokenizer.TokenizerMismatch`` (a ``ValueError``)
    for an unknown scheme."""
    return get_scheme(tokenizer).rtt


def check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    """The levels as floats; raises ``ValueError`` unless each is strictly between 0 and 1."""
    out = tuple(float(q) for q in quantiles)
    if not out:
        raise ValueError("no quantile levels given")
    for q in out:
        if not (0.0 < q < 1.0):
            raise ValueError(f"quantile level {q!r} is not strictly between 0 and 1")
    return out


def parse_quantiles(text: str) -> tuple[float, ...]:
    """``"0.1,0.5,0.9"`` -> (0.1, 0.5, 0.9); raises ``ValueError`` naming a bad item."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    try:
        values = [float(x) for x in items]
    except ValueError:
        raise ValueError(f"{text!r}: expected comma-separated numbers such as 0.1,0.5,0.9") from None
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"{text!r}: quantile levels must be finite")
    return check_quantiles(values)


def _shared_rows(prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """(rows,) for each row the first row of the same prompt with the same tokens so far (see the module
    docstring: equal prefixes must read equal logits for the quantiles to stay monotone)."""
    key = np.ascontiguousarray(np.concatenate([prompt[:, None], prefix], axis=1))  # (rows, 1 + t)
    _, first, inverse = np.unique(key.view(np.dtype((np.void, key.dtype.itemsize * key.shape[1])))[:, 0],
                                  return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)]


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))


def descend(
    logits_fn: Callable[[np.ndarray], np.ndarray],
    n: int,
    code: RttCode,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    *,
    truth: np.ndarray | None = None,
) -> RttDistribution:
    """The quantiles (and with ``truth`` the true RTT's likelihood and PIT) of ``n`` prompts' RTTs.

    Rows are grouped by prompt: prompt ``i`` owns rows ``i * R .. i * R + R - 1``, one per quantile level
    and, with ``truth`` ((n,) ms), a last one that follows the true RTT's tokens. ``logits_fn(prefix)`` gets
    ``prefix`` (n * R, t), each row's value tokens so far, for t = 0, 1, ..., width - 1 in turn (once each,
    so an implementation may keep a KV cache and feed only the last column), and returns the next-token
    logits (n * R, vocab) after each row's prompt and those tokens.
    """
    qs = check_quantiles(quantiles)
    nq = len(qs)
    per = nq + (truth is not None)  # rows per prompt
    rows = n * per
    prompt = np.repeat(np.arange(n), per)  # (rows,)
    is_q = np.tile(np.arange(per) < nq, n)  # (rows,) quantile rows; the others follow the truth
    target = np.tile(np.array([*qs, 0.5][:per], np.float64), n)  # (rows,) the target within the prefix
    tokens = np.zeros((rows, code.width), np.int64)
    true_tokens = None
    if truth is not None:
        truth = np.asarray(truth, np.float64)
        failed = truth < 0  # (n,) a failure's likelihood is P(failure); its row follows the first quantile's
        placeholder = min(max(1.0, getattr(code, "lo_ms", 0.0)), getattr(code, "hi_ms", np.inf))
        true_tokens = code.encode(np.where(failed, placeholder, truth))  # (n, width)
        log_lik = np.zeros(n)
        pit_below, pit_mass = np.zeros(n), np.ones(n)  # F(x-) so far, P(x's prefix) under the success law
        true_ok = ~failed  # the true tokens stay inside the success code
    fail = np.zeros(n)
    for t in range(code.width):
        logits = np.asarray(logits_fn(tokens[:, :t]), np.float64)  # (rows, vocab)
        if logits.shape[0] != rows:
            raise ValueError(f"logits_fn returned {logits.shape[0]} rows, expected {rows}")
        logits = logits[_shared_rows(prompt, tokens[:, :t])]
        grammar_lse = _logsumexp(logits[:, code.grammar_tokens(t)])  # (rows,) log of the grammar's mass
        value = code.value_tokens(t)  # (K,)
        ok = code.success_mask(tokens[:, :t])  # (rows, K)
        if t == 0:
            head = np.arange(n) * per  # each prompt's first row (all its rows share position 0's logits)
            fail = np.exp(_logsumexp(logits[head][:, code.failure_tokens]) - grammar_lse[head])
        v = np.where(ok, logits[:, value], -np.inf)  # (rows, K)
        p = np.exp(v - v.max(axis=1, keepdims=True))  # (rows, K) success masses, the largest 1: no underflow
        cum = np.cumsum(p, axis=1)  # (rows, K) in value order
        total = cum[:, -1]  # (rows,) >= 1
        # Quantile rows: the first token whose cumulative mass reaches the target, then the target's rest
        # inside that token's mass, as a fraction of it.
        goal = target * total  # (rows,) <= total, as target <= 1
        k = np.argmax((cum >= goal[:, None]) & (p > 0), axis=1)  # (rows,) a token of the success code
        r = np.arange(rows)
        pk = p[r, k]
        below = cum[r, k] - pk
        chosen = value[k]
        rest = np.clip((goal - below) / np.where(pk > 0, pk, 1.0), 0.0, 1.0)
        target = np.where(is_q, rest, target)
        if truth is not None:
            tr = ~is_q  # the truth rows, one per prompt, in prompt order
            x = true_tokens[:, t]  # (n,)
            step = logits[tr, x] - grammar_lse[tr]
            log_lik += np.where(failed, np.log(fail) if t == 0 else 0.0, step)
            match = value[None, :] == x[:, None]  # (n, K)
            pos = np.argmax(match, axis=1)  # (n,) where the true token stands in the value order
            here = match.any(axis=1) & ok[tr, pos] & true_ok
            tp, tc, tt = p[tr, pos], cum[tr, pos], total[tr]
            pit_below = np.where(here, pit_below + pit_mass * (tc - tp) / tt, pit_below)
            pit_mass = np.where(here, pit_mass * tp / tt, pit_mass)
            true_ok &= here
            fed = np.where(failed, chosen[np.arange(n) * per], x)  # (n,)
            chosen = np.where(is_q, chosen, np.repeat(fed, per))
        tokens[:, t] = chosen
    values = code.decode(tokens[is_q]).reshape(n, nq)  # (n, Q)
    if truth is None:
        return RttDistribution(qs, values, fail)
    pit = np.where(true_ok, pit_below + pit_mass / 2, np.nan)
    return RttDistribution(qs, values, fail, log_lik, pit)


def model_logits_fn(sampler, prompts: Sequence[np.ndarray], rows_per_prompt: int,
                    width: int) -> Callable[[np.ndarray], np.ndarray]:
    """A ``logits_fn`` for :func:`descend` over a model: a prefill of ``prompts`` at t = 0 (shared by the
    prompt's rows), then one cached step per value token, every row reading its prompt's one cache
    (:meth:`~trainer.eval.sampling.Sampler.step_shared`)."""
    lengths = np.array([len(p) for p in prompts], np.int64)
    state: dict = {}

    def logits_fn(prefix: np.ndarray) -> np.ndarray:
        t = prefix.shape[1]
        if t == 0:
            logits, cache = sampler.prefill(list(prompts))  # (n, vocab)
            state["prefix"] = cache
            state["cache"] = sampler.new_cache(cache, rows_per_prompt, round_up(width, NEW_BUCKET))
            return np.repeat(logits, rows_per_prompt, axis=0)
        positions = np.repeat(lengths, rows_per_prompt) + t - 1  # (rows,) position of the fed token
        logits, state["cache"] = sampler.step_shared(prefix[:, -1], positions, state["prefix"], lengths,
                                                     state["cache"])
        return logits

    return logits_fn


CACHE_TOKENS = 131_072  # a shared-prefix batch holds prompts of at most this many tokens in all


def shared_logits_fn(sampler, prompts: Sequence[np.ndarray], shared: np.ndarray, group: np.ndarray,
                     rows_per_prompt: int, width: int) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`model_logits_fn` for prompts that share their beginnings: prompt ``i``'s first ``shared[i]``
    tokens are the beginning of its group's longest shared prefix (``group[i]``), as the prompts of
    measurements of one record share the record's tokens before each measurement.

    At t = 0 one pass per group (:meth:`~trainer.model.Decoder.decode_tree`) runs the group's longest prefix
    and, after it, each prompt's own tokens (``prompts[i][shared[i]:]``, at positions ``shared[i]`` on), which
    see only the prefix's first ``shared[i]`` tokens and themselves. The descent's rows then read that cache,
    the same parts of it, and their own tokens (:meth:`~trainer.model.Decoder.decode_over`): nothing is run
    or copied once per prompt or per row, and a slot of the group's prefix past ``shared[i]`` (the record's
    later tokens, the measurement's own RTT among them) is never read for prompt ``i``. The logits equal
    :func:`model_logits_fn`'s on the whole prompts, to float rounding.
    """
    n, per = len(prompts), rows_per_prompt
    lengths = np.array([len(p) for p in prompts], np.int64)
    shared = np.asarray(shared, np.int64)
    own_len = lengths - shared  # (n,) >= 1
    groups, gidx = np.unique(np.asarray(group), return_inverse=True)
    gidx = gidx.reshape(-1)
    longest = np.zeros(len(groups), np.int64)
    np.maximum.at(longest, gidx, shared)
    # Each group's row: its longest prefix, then its prompts' own tokens in the order of where they begin.
    order = np.lexsort((shared, gidx))
    size = longest + np.bincount(gidx, weights=own_len, minlength=len(groups)).astype(np.int64)
    seq = round_up(int(size.max()), LENGTH_BUCKET)
    tokens = np.full((len(groups), seq), sampler.pad_id, np.int64)  # PAD opens no block, and is never read
    positions = np.zeros((len(groups), seq), np.int64)
    segment = np.full((len(groups), seq), -1, np.int64)
    visible = np.zeros((len(groups), seq), np.int64)
    begin = np.zeros(n, np.int64)  # (n,) where prompt i's own tokens sit in its group's row
    fill = longest.copy()
    for g in range(len(groups)):
        i = int(np.flatnonzero((gidx == g) & (shared == longest[g]))[0])
        k = int(longest[g])
        tokens[g, :k] = prompts[i][:k]
        positions[g, :k] = np.arange(k)
        segment[g, :k] = 0
        visible[g, :k] = np.arange(1, k + 1)
    # Segments count the own parts within each group's row: a record holds at most a few hundred
    # measurements, so decode_tree's field code (segment * 2**16 + position) * 16 stays inside int32.
    parts = np.zeros(len(groups), np.int64)
    for i in order:
        g, k, a = gidx[i], own_len[i], fill[gidx[i]]
        parts[g] += 1
        tokens[g, a : a + k] = prompts[i][shared[i]:]
        positions[g, a : a + k] = shared[i] + np.arange(k)
        segment[g, a : a + k] = parts[g]
        visible[g, a : a + k] = shared[i]
        begin[i], fill[g] = a, a + k
    pick = np.stack([gidx, begin + own_len - 1], axis=1)  # (n, 2) each prompt's last token
    # The descent's rows, prompt by prompt: row r of prompt i sees the prefix's first shared[i] slots and
    # prompt i's own tokens in its group's cache, then its own value tokens from slot 0 of its own cache.
    # A cache is read by equal runs of consecutive rows, so rows are laid out group by group, each group
    # padded to the batch's largest with rows that see nothing and whose logits are dropped.
    counts = np.bincount(gidx, minlength=len(groups))
    most = int(counts.max())
    rank = np.zeros(n, np.int64)
    for g in range(len(groups)):
        rank[gidx == g] = np.arange(counts[g])
    slot = gidx * most + rank  # (n,) each prompt's place in the layout
    m = len(groups) * most * per
    rows = (slot[:, None] * per + np.arange(per)[None, :]).reshape(-1)  # (n * per,) descent row -> layout row
    sees = np.zeros((m, 3), np.int64)
    sees[rows] = np.repeat(np.stack([shared, begin, begin + own_len], axis=1), per, axis=0)
    offset = np.zeros(m, np.int64)  # (m,) the rows' value tokens from slot 0 of their own caches
    offset[rows] = np.repeat(lengths, per)
    state: dict = {}

    def logits_fn(prefix: np.ndarray) -> np.ndarray:
        t = prefix.shape[1]
        if t == 0:
            logits, state["group"] = sampler.decode_tree(tokens, positions, segment, visible, pick)
            cache = sampler.empty_cache(m, round_up(width, NEW_BUCKET))
            block = np.full(m, int(cache["block"][0]), np.int64)  # each row's block state: its prompt's
            block[rows] = np.repeat(np.asarray(state["group"]["block"]), per)
            cache["block"] = jnp.asarray(block, jnp.int32)
            state["rows"] = cache
            return np.repeat(logits, per, axis=0)
        fed = np.full(m, sampler.pad_id, np.int64)
        fed[rows] = prefix[:, -1]
        logits, state["rows"] = sampler.decode_over(fed[:, None], (offset + t - 1)[:, None], np.zeros(m, np.int64),
                                                    [(state["group"], sees)], offset, state["rows"])
        return logits[rows]

    return logits_fn


def model_distribution(
    sampler,
    prompts: Sequence[np.ndarray],
    code: RttCode,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    *,
    truth: np.ndarray | None = None,
    prompts_per_batch: int = 32,
    shared: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = False,
) -> RttDistribution:
    """:func:`descend` for every prompt (each ends right before the RTT's value tokens: with ``code.role``
    where the scheme has one), in batches of ``prompts_per_batch`` prompts of similar length (sorted by
    length, so a batch pads little); results in the prompts' order.

    ``shared`` = ``(group, length)`` ((n,) each) says that prompt ``i``'s first ``length[i]`` tokens begin
    its group's longest such prefix (an evaluation's prompts: the record's tokens before the measurement),
    checked here; each group's prefix is then run once per batch (:func:`shared_logits_fn`) instead of once
    per prompt, and a batch holds prompts of at most :data:`CACHE_TOKENS` tokens in all (bounding its memory).
    """
    qs = check_quantiles(quantiles)
    prompts = [np.asarray(p, np.int64) for p in prompts]
    for i, p in enumerate(prompts):
        if not len(p) or (code.role is not None and p[-1] != code.role):
            raise ValueError(f"prompt {i} does not end with the RTT role token {code.role}")
    per = len(qs) + (truth is not None)
    if shared is not None:
        group, length = (np.asarray(a, np.int64) for a in shared)
        if group.shape != (len(prompts),) or length.shape != (len(prompts),):
            raise ValueError("shared: one group and one prefix length per prompt")
        if np.any(length < 0) or np.any(length >= [len(p) for p in prompts]):
            raise ValueError("shared: a prefix length must leave each prompt at least one token of its own")
        longest = {}
        for i in np.argsort(-length, kind="stable"):
            ref = longest.setdefault(int(group[i]), prompts[i])
            if not np.array_equal(prompts[i][: length[i]], ref[: length[i]]):
                raise ValueError(f"shared: prompt {i} does not begin with its group's prefix")
        # Groups with longer prefixes last (a batch pads its prefixes to its longest), a group's prompts together.
        top = np.zeros(len(prompts), np.int64)
        for g, ref in longest.items():
            top[group == g] = len(ref)
        order = np.lexsort((length, group, top))
        budget = max(1, CACHE_TOKENS // max(int(max(len(p) for p in prompts)), 1))
        prompts_per_batch = max(1, min(prompts_per_batch, budget))
    else:
        order = np.argsort([len(p) for p in prompts], kind="stable")
    parts, index = [], []
    bar = None
    if progress:
        bar = tqdm(total=len(prompts), desc="rtt quantiles", file=sys.stderr, dynamic_ncols=True)
    for lo in range(0, len(order), max(1, prompts_per_batch)):
        ids = order[lo : lo + prompts_per_batch]
        batch = [prompts[i] for i in ids]
        if shared is None:
            fn = model_logits_fn(sampler, batch, per, code.width)
        else:
            fn = shared_logits_fn(sampler, batch, length[ids], group[ids], per, code.width)
        parts.append(descend(fn, len(ids), code, qs, truth=None if truth is None else np.asarray(truth)[ids]))
        index.append(ids)
        if bar is not None:
            bar.update(len(ids))
    if bar is not None:
        bar.close()
    out = RttDistribution.concat(parts, qs)
    if not parts:
        return out
    inverse = np.empty(len(prompts), np.int64)
    inverse[np.concatenate(index)] = np.arange(len(prompts))
    return out.take(inverse)
