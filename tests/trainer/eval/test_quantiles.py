"""Exact RTT quantiles by descent: against enumeration of the code, against samples, on a trained model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tokenizer import get_scheme
from tokenizer.vocab import BYTE_OFFSET, VOCAB_SIZE
from trainer.eval import quantiles as qt

V1_RTT_CODE = get_scheme("v1").rtt

LEVELS = (0.01, 0.05, 0.1, 0.25, 0.333, 0.5, 0.75, 0.9, 0.95, 0.99)


@dataclasses.dataclass(frozen=True)
class TwoTokenCode:
    """A log-scale style code of two tokens (a coarse and a fine digit), base 5, with one failure token;
    its value order is *not* its token-id order (ids are laid out backwards), to test the generic path."""

    role: int = 0
    width: int = 2
    failure_tokens: np.ndarray = dataclasses.field(default_factory=lambda: np.array([1]))

    def grammar_tokens(self, position):
        return np.arange(1, 7) if position == 0 else np.arange(2, 7)

    def value_tokens(self, position):
        return np.array([6, 5, 4, 3, 2])  # digit d is token 6 - d

    def success_mask(self, prefix):
        b, t = prefix.shape
        mask = np.ones((b, 5), bool)
        if t == 1:
            mask[prefix[:, 0] == 2, 4] = False  # the largest coarse digit has no fine digit 4 (a bounded range)
        return mask

    def decode(self, tokens):
        d = 6 - np.asarray(tokens)
        return 10.0 ** ((d[..., 0] * 5 + d[..., 1]) / 10.0)

    def encode(self, values):
        code = np.rint(np.log10(np.asarray(values, np.float64)) * 10).astype(np.int64)
        return np.stack([6 - code // 5, 6 - code % 5], axis=1)


def _two_token_logits(n, seed=0):
    """A hand-set distribution: random logits at position 0 per prompt, at position 1 per (prompt, token)."""
    rng = np.random.default_rng(seed)
    first = rng.normal(0, 1.5, size=(n, 8))
    second = rng.normal(0, 1.5, size=(n, 8, 8))
    first[:, 0] = 50.0  # a token the grammar forbids: must be ignored
    return first, second


def _exact_two_token(first, second, code):
    """Enumerate every value: (values sorted, probabilities given success, P(failure)) per prompt."""
    out = []
    for i in range(len(first)):
        g0 = np.exp(first[i, code.grammar_tokens(0)])
        fail = np.exp(first[i, code.failure_tokens]).sum() / g0.sum()
        vals, probs = [], []
        v0 = code.value_tokens(0)
        p0 = np.exp(first[i, v0])
        p0 = p0 / p0.sum()
        for a, pa in zip(v0, p0):
            mask = code.success_mask(np.array([[a]]))[0]
            v1 = code.value_tokens(1)
            p1 = np.where(mask, np.exp(second[i, a, v1]), 0.0)
            p1 = p1 / p1.sum()
            for b, pb in zip(v1, p1):
                if pb > 0:
                    vals.append(code.decode(np.array([a, b])))
                    probs.append(pa * pb)
        order = np.argsort(vals)
        out.append((np.array(vals)[order], np.array(probs)[order], fail))
    return out


def _fn_two_token(first, second, per):
    def fn(prefix):
        prompt = np.repeat(np.arange(len(first)), per)
        if prefix.shape[1] == 0:
            return first[prompt]
        return second[prompt, prefix[:, 0]]

    return fn


def _lower_quantile(values, probs, q):
    cdf = np.cumsum(probs)
    return values[np.searchsorted(cdf, q * cdf[-1], side="left")]


def test_two_token_code_descent_equals_enumeration():
    code = TwoTokenCode()
    n = 6
    first, second = _two_token_logits(n)
    truth = np.array([10 ** 0.3, 10 ** 1.1, 10 ** 2.2, 10 ** 0.0, 10 ** 1.7, 10 ** 2.3])
    dist = qt.descend(_fn_two_token(first, second, len(LEVELS) + 1), n, code, LEVELS, truth=truth)
    exact = _exact_two_token(first, second, code)
    for i, (vals, probs, fail) in enumerate(exact):
        assert dist.failure_probability[i] == pytest.approx(fail, rel=1e-12)
        for j, q in enumerate(LEVELS):
            assert dist.values[i, j] == _lower_quantile(vals, probs, q), (i, q)
        # The true value's likelihood (grammar-normalised) and its mid PIT under the success law.
        k = int(np.flatnonzero(np.isclose(vals, truth[i]))[0])
        assert dist.pit[i] == pytest.approx(probs[:k].sum() + probs[k] / 2, rel=1e-9)
        a, b = code.encode(truth[i : i + 1])[0]
        g0 = np.exp(first[i, code.grammar_tokens(0)]).sum()
        g1 = np.exp(second[i, a, code.grammar_tokens(1)]).sum()
        want = np.log(np.exp(first[i, a]) / g0 * np.exp(second[i, a, b]) / g1)
        assert dist.log_likelihood[i] == pytest.approx(want, rel=1e-9)
    assert np.all(np.diff(dist.values, axis=1) >= 0)


def test_descent_agrees_with_the_empirical_quantiles_of_many_samples():
    code = TwoTokenCode()
    first, second = _two_token_logits(3, seed=5)
    dist = qt.descend(_fn_two_token(first, second, len(LEVELS)), 3, code, LEVELS)
    rng = np.random.default_rng(1)
    for i, (vals, probs, _) in enumerate(_exact_two_token(first, second, code)):
        draws = rng.choice(vals, size=200_000, p=probs / probs.sum())
        for j, q in enumerate(LEVELS):
            x = dist.values[i, j]
            # the lower quantile x: at least q of the mass is <= x and less than q is < x (to sampling noise)
            assert np.mean(draws <= x) >= q - 0.005 and np.mean(draws < x) <= q + 0.005, (i, q)


# -- v1: a hand-set distribution over the first two bytes, the other six fixed --------------------------------

TAIL = 0x3A  # the byte every later position puts nearly all its mass on


def _v1_logits(n, seed=0):
    rng = np.random.default_rng(seed)
    first = rng.normal(0, 1.0, size=(n, VOCAB_SIZE))
    first[:, BYTE_OFFSET + 0x40 : BYTE_OFFSET + 0x42] += 4.0  # most mass near 2-8 ms, as an RTT would
    first[:, :BYTE_OFFSET] = 80.0  # role tokens: never allowed inside the RTT, must not count
    first[:, BYTE_OFFSET + 0x7F] += 3.0  # and much mass where inf/NaN lurk, which must be left out
    second = rng.normal(0, 2.0, size=(n, 256, VOCAB_SIZE))
    second[:, 0x7F, BYTE_OFFSET + 0xF0 :] += 10.0
    return first, second


def _v1_fn(first, second, per):
    later = np.full(VOCAB_SIZE, -30.0)
    later[BYTE_OFFSET + TAIL] = 0.0

    def fn(prefix):
        prompt = np.repeat(np.arange(len(first)), per)
        t = prefix.shape[1]
        if t == 0:
            return first[prompt]
        if t == 1:
            return second[prompt, prefix[:, 0] - BYTE_OFFSET]
        return np.broadcast_to(later, (len(prompt), VOCAB_SIZE))

    return fn


def _v1_exact(first, second, i):
    """Every (b0, b1) of a success, its probability given success (the tail's mass is the same for all)."""
    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    b = np.arange(256)
    p0 = softmax(first[i, BYTE_OFFSET:BYTE_OFFSET + 256])
    fail = p0[128:].sum()
    vals, probs = [], []
    for b0 in range(128):
        mask = np.ones(256, bool) if b0 != 0x7F else b < 0xF0
        p1 = np.where(mask, softmax(second[i, b0, BYTE_OFFSET:BYTE_OFFSET + 256]), 0.0)
        p1 = p1 / p1.sum()
        raw = np.zeros((256, 8), np.uint8)
        raw[:, 0], raw[:, 1], raw[:, 2:] = b0, b, TAIL
        vals.append(raw.view(">f8")[:, 0].astype(np.float64))
        probs.append(p0[b0] * p1)
    vals, probs = np.concatenate(vals), np.concatenate(probs)
    keep = probs > 0
    return vals[keep], probs[keep] / probs[keep].sum(), fail


def test_v1_descent_equals_enumeration_of_the_first_two_bytes():
    n = 3
    first, second = _v1_logits(n)
    dist = qt.descend(_v1_fn(first, second, len(LEVELS)), n, V1_RTT_CODE, LEVELS)
    for i in range(n):
        vals, probs, fail = _v1_exact(first, second, i)
        assert np.all(np.diff(vals) > 0)  # byte order is value order
        assert dist.failure_probability[i] == pytest.approx(fail, rel=1e-9)
        for j, q in enumerate(LEVELS):
            assert dist.values[i, j] == _lower_quantile(vals, probs, q), (i, q)
    assert np.isfinite(dist.values).all() and (dist.values >= 0).all()
    assert np.all(np.diff(dist.values, axis=1) >= 0)


def test_quantiles_are_deterministic_and_monotone_even_when_rows_see_noisy_logits():
    n = 2
    first, second = _v1_logits(n, seed=3)
    fine = np.linspace(0.001, 0.999, 60)
    base = _v1_fn(first, second, len(fine))
    rng = np.random.default_rng(0)

    def noisy(prefix):  # as batched float arithmetic may do: each row's logits off in the last bits
        logits = np.array(base(prefix), np.float64)
        return logits + rng.normal(0, 1e-9, size=logits.shape)

    a = qt.descend(noisy, n, V1_RTT_CODE, fine)
    b = qt.descend(base, n, V1_RTT_CODE, fine)
    assert np.all(np.diff(a.values, axis=1) >= 0)
    np.testing.assert_array_equal(qt.descend(base, n, V1_RTT_CODE, fine).values, b.values)
    assert np.isfinite(a.values).all()


def test_a_certain_failure_and_a_certain_value():
    n = 1
    first = np.full((n, VOCAB_SIZE), -40.0)
    raw = np.frombuffer(np.array([12.5], ">f8").tobytes(), np.uint8)
    first[0, BYTE_OFFSET + raw[0]] = 0.0
    first[0, BYTE_OFFSET + 0xBF] = 0.0  # the first byte of -1.0: half the mass fails

    def fn(prefix):
        t = prefix.shape[1]
        out = np.full((prefix.shape[0], VOCAB_SIZE), -40.0)
        if t == 0:
            return np.repeat(first, prefix.shape[0], axis=0)
        out[:, BYTE_OFFSET + raw[t]] = 0.0
        return out

    dist = qt.descend(fn, n, V1_RTT_CODE, (0.1, 0.5, 0.9), truth=np.array([12.5]))
    assert dist.values.tolist() == [[12.5, 12.5, 12.5]]
    assert dist.failure_probability[0] == pytest.approx(0.5, rel=1e-12)
    assert dist.pit[0] == pytest.approx(0.5, abs=1e-9)
    assert dist.log_likelihood[0] == pytest.approx(np.log(0.5), abs=1e-9)
    failed = qt.descend(fn, n, V1_RTT_CODE, (0.5,), truth=np.array([-1.0]))
    assert np.isnan(failed.pit[0])
    assert failed.log_likelihood[0] == pytest.approx(np.log(0.5), abs=1e-9)  # a failure's likelihood: P(failure)
    np.testing.assert_array_equal(failed.values, dist.values[:, 1:2])


def test_the_rtt_code_of_a_manifest_entry():
    code = qt.rtt_code_for({"name": "v1", "version": 1, "vocab_size": VOCAB_SIZE, "pad_id": VOCAB_SIZE - 1})
    assert code.width == 8 and code.decode(code.encode(np.array([42.5])))[0] == 42.5
    with pytest.raises(ValueError):
        qt.rtt_code_for("v0")


@pytest.mark.parametrize("text, message", [("0.5,1", "strictly between"), ("a", "comma-separated"),
                                           ("", "no quantile"), ("0,0.5", "strictly between"),
                                           ("nan", "finite")])
def test_bad_quantile_levels(text, message):
    with pytest.raises(ValueError, match=message):
        qt.parse_quantiles(text)


def test_parse_quantiles():
    assert qt.parse_quantiles("0.1, 0.5,0.9") == (0.1, 0.5, 0.9)


@pytest.mark.slow
def test_model_descent_matches_the_models_samples(loaded_model):
    """On a trained checkpoint: batched like evaluation, the quantiles agree with the model's own samples."""
    from tokenizer.vocab import RTT_START
    from trainer.eval import predict, sampling

    sampler = sampling.Sampler.from_loaded(loaded_model)
    given = predict.parse_given(["src=10.1.2.3", "dst=8.8.8.8", "time=2025-07-01T12:00:00Z"])
    prompt = np.array(predict.build_prompt(given) + [RTT_START])
    other = np.array(predict.build_prompt(predict.parse_given(["src=2001:db8::1", "dst=2a00:1450::1"])) + [RTT_START])
    levels = (0.1, 0.25, 0.5, 0.75, 0.9)
    together = qt.model_distribution(sampler, [prompt, other, prompt], V1_RTT_CODE, levels, prompts_per_batch=2)
    alone = qt.model_distribution(sampler, [prompt], V1_RTT_CODE, levels)
    np.testing.assert_array_equal(together.values[0], together.values[2])
    # Batched with other prompts, the logits may differ in the last float bits (padding), which may move a
    # later byte of a quantile by one step: equal to far better than the sampling noise.
    np.testing.assert_allclose(together.values[0], alone.values[0], rtol=1e-3)
    draws = sampling.sample(sampler, [prompt], 4096, seed=11)[0]
    rtts = V1_RTT_CODE.decode(draws[:, : V1_RTT_CODE.width])
    ok = rtts[np.isfinite(rtts) & ~np.signbit(rtts)]
    assert np.mean(np.signbit(rtts)) == pytest.approx(alone.failure_probability[0], abs=0.03)
    for q, x in zip(levels, alone.values[0]):
        assert abs(np.mean(ok <= x) - q) <= 0.04, (q, x)


def test_v2_log_scale_code_descent_equals_enumeration():
    """The same descent through scheme v2's RTT codec (two log-scale tokens, a one-token failure, an exact
    escape token that is neither a failure nor on the scale)."""
    scheme = get_scheme("v2")
    code = scheme.rtt
    n, vocab = 2, scheme.vocab_size
    rng = np.random.default_rng(4)
    first = rng.normal(0, 2.0, size=(n, vocab))
    coarse, fine = code.value_tokens(0), code.value_tokens(1)
    second = rng.normal(0, 2.0, size=(n, len(coarse), vocab))
    row_of = {int(t): i for i, t in enumerate(coarse)}

    def fn(prefix):
        prompt = np.repeat(np.arange(n), len(LEVELS) + 1)
        if prefix.shape[1] == 0:
            return first[prompt]
        return second[prompt, [row_of.get(int(t), 0) for t in prefix[:, 0]]]

    truth = np.array([37.5, -1.0])
    dist = qt.descend(fn, n, code, LEVELS, truth=truth)
    for i in range(n):
        g0 = np.exp(first[i, code.grammar_tokens(0)]).sum()
        assert dist.failure_probability[i] == pytest.approx(np.exp(first[i, code.failure_tokens]).sum() / g0)
        p0 = np.exp(first[i, coarse])
        p1 = np.exp(second[i][:, fine])  # (coarse, fine)
        probs = (p0[:, None] / p0.sum() * p1 / p1.sum(axis=1, keepdims=True)).reshape(-1)
        vals = code.decode(np.stack(np.meshgrid(coarse, fine, indexing="ij"), axis=-1).reshape(-1, 2))
        assert np.all(np.diff(vals) > 0)  # coarse-major order is value order
        for j, q in enumerate(LEVELS):
            assert dist.values[i, j] == _lower_quantile(vals, probs, q), (i, q)
    assert np.log(dist.failure_probability[1]) == pytest.approx(dist.log_likelihood[1])
    x = code.encode(truth[:1])[0]
    k = int(np.flatnonzero((np.stack(np.meshgrid(coarse, fine, indexing="ij"), -1).reshape(-1, 2) == x).all(1))[0])
    p0 = np.exp(first[0, coarse])
    p1 = np.exp(second[0][:, fine])
    probs = (p0[:, None] / p0.sum() * p1 / p1.sum(axis=1, keepdims=True)).reshape(-1)
    assert dist.pit[0] == pytest.approx(probs[:k].sum() + probs[k] / 2, rel=1e-9)


@pytest.mark.slow
def test_shared_record_prefixes_give_each_prompts_own_distribution_and_leak_nothing(loaded_model, eval_dataset):
    """Prompts of one record share its tokens: the shared path runs each record's prefix once, and a
    measurement's own tokens (its RTT among them) inside a longer prompt's prefix never reach it."""
    from tests.trainer.eval.test_model_eval import _with_rtt
    from tests.trainer.helpers import make_config
    from trainer import data
    from trainer.eval import columns, model_eval, sampling

    dataset = data.open_dataset(str(eval_dataset), make_config(eval_dataset))
    records = columns.read_records(dataset, "test")[:6]
    spans = columns.measurement_spans(records)
    sampler = sampling.Sampler.from_loaded(loaded_model)
    levels = (0.1, 0.5, 0.9)

    def run(recs, rows, shared):
        prompts = [model_eval.rtt_prompt(recs[spans.record[i]], spans.start[i], spans.end[i]) for i in rows]
        kw = {"shared": (spans.record[rows], spans.start[rows])} if shared else {}
        truth = np.array([-1.0 if i % 5 == 0 else 20.0 + i for i in rows])
        return qt.model_distribution(sampler, prompts, V1_RTT_CODE, levels, truth=truth, prompts_per_batch=8, **kw)

    rows = np.flatnonzero(np.isin(spans.record, [0, 2, 3]))[::3]  # a few measurements of three records
    plain, shared = run(records, rows, False), run(records, rows, True)
    np.testing.assert_allclose(shared.values, plain.values, rtol=1e-3)
    np.testing.assert_allclose(shared.failure_probability, plain.failure_probability, rtol=1e-4)
    np.testing.assert_allclose(shared.log_likelihood, plain.log_likelihood, rtol=1e-4)
    np.testing.assert_allclose(shared.pit, plain.pit, atol=1e-4)
    # Change the RTT of the second chosen measurement of record 0, which a later prompt's prefix holds.
    first = rows[spans.record[rows] == 0]
    assert len(first) >= 2
    target = int(first[0])
    local = target - int(np.flatnonzero(spans.record == 0)[0])
    changed = records.copy()
    changed[0], _, _ = _with_rtt(records[0], local, 987.654)
    again = run(changed, rows, True)
    k = int(np.flatnonzero(rows == target)[0])
    np.testing.assert_array_equal(again.values[k], shared.values[k])
    assert again.failure_probability[k] == shared.failure_probability[k]
    later = int(np.flatnonzero(rows == first[1])[0])
    assert not np.array_equal(again.values[later], shared.values[later]) or (
        again.failure_probability[later] != shared.failure_probability[later])  # its context did change


def test_shared_prefixes_are_checked():
    code = TwoTokenCode()
    prompts = [np.array([5, 6, 0]), np.array([5, 7, 3, 0])]
    with pytest.raises(ValueError, match="does not begin with its group's prefix"):
        qt.model_distribution(None, prompts, code, (0.5,), shared=(np.array([1, 1]), np.array([2, 3])))
    with pytest.raises(ValueError, match="at least one token of its own"):
        qt.model_distribution(None, prompts, code, (0.5,), shared=(np.array([1, 2]), np.array([3, 1])))


@pytest.mark.slow
def test_one_pass_over_a_groups_prompts_gives_each_prompts_own_logits():
    """shared_logits_fn's one pass per group (the longest prefix, then every prompt's own tokens) and the rows'
    steps over it give the logits of each prompt run alone (model_logits_fn, itself checked against the full
    forward): groups of 3 prompts and of 1, a prompt with nothing shared, own tokens of unequal lengths."""
    from flax import nnx

    from tests.trainer.eval.test_sampling import _model
    from tokenizer.vocab import MEASUREMENT_START
    from trainer.eval import sampling

    graphdef, state = nnx.split(_model(seed=7))
    sampler = sampling.Sampler(graphdef, nnx.to_pure_dict(state))
    rng = np.random.default_rng(11)
    records = [rng.integers(0, VOCAB_SIZE, size=90), rng.integers(0, VOCAB_SIZE, size=50)]
    own = lambda k: np.array([MEASUREMENT_START, *rng.integers(0, VOCAB_SIZE, size=k - 1)])  # noqa: E731 - opens a block
    spec = [(0, 20, 5), (0, 61, 9), (0, 44, 3), (1, 0, 12)]  # (group, tokens shared with the group, own tokens)
    prompts = [np.concatenate([records[g][:s], own(k)]) for g, s, k in spec]
    group, shared = np.array([g for g, _, _ in spec]), np.array([s for _, s, _ in spec])
    per, width = 3, 4
    plain = qt.model_logits_fn(sampler, prompts, per, width)
    tree = qt.shared_logits_fn(sampler, prompts, shared, group, per, width)
    fed = rng.integers(0, VOCAB_SIZE, size=(len(prompts) * per, width))
    for t in range(width):
        want, got = plain(fed[:, :t]), tree(fed[:, :t])
        assert want.shape == got.shape == (len(prompts) * per, VOCAB_SIZE) and np.abs(want).max() > 1.0
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)
