"""The vectorized baselines against slow per-row references, and the field's predictors on geography.

References loop over rows in plain Python (dicts, lists, one small solve per source or measurement);
the code under test sorts and group-bys whole arrays. Small random data, seeded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.eval import baselines as bl
from trainer.eval import coordinates as co


def _random_block(seed: int, records: int = 30, per: int = 12, sources: int = 6, dests: int = 5):
    """Measurements of whole records in file order: each record has one source (as pretokenize writes them)
    and a mix of destinations, some repeated; ~15% failures."""
    rng = np.random.default_rng(seed)
    n = records * per
    record = np.repeat(np.arange(records), per)
    src = np.repeat(rng.integers(0, sources, records), per)
    src[rng.random(n) < 0.1] = 99  # a few rows of another source inside a record
    dst = rng.integers(100, 100 + dests, n)
    rtt = np.round(rng.uniform(1, 100, n), 3)
    rtt[rng.random(n) < 0.15] = -1.0
    return record, src, dst, rtt


def _pair_context_reference(record, src, dst, rtt, alpha):
    n = len(rtt)
    last, failed, mean3, ewma = [math.nan] * n, [0.0] * n, [math.nan] * n, [math.nan] * n
    for i in range(n):
        earlier = [j for j in range(i) if record[j] == record[i] and src[j] == src[i] and dst[j] == dst[i]]
        if earlier:
            failed[i] = float(rtt[earlier[-1]] < 0)
        good = [float(rtt[j]) for j in earlier if rtt[j] >= 0]
        if good:
            last[i] = good[-1]
            mean3[i] = sum(good[-3:]) / len(good[-3:])
            e = good[0]
            for x in good[1:]:
                e = alpha * x + (1 - alpha) * e
            ewma[i] = e
    return last, failed, mean3, ewma


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_context_matches_a_per_row_reference(seed):
    record, src, dst, rtt = _random_block(seed)
    got = bl.pair_context(record, src, dst, rtt)
    want = _pair_context_reference(record, src, dst, rtt, bl.EWMA_ALPHA)
    for got_a, want_a in zip((got.last, got.last_failed, got.mean_last3, got.ewma), want):
        np.testing.assert_allclose(got_a, np.array(want_a), rtol=1e-12, equal_nan=True)
    assert np.isfinite(got.ewma).sum() > len(rtt) // 3  # the fixture exercises repeats, not only NaN


def test_context_predictors_fall_back_to_the_destination_median():
    record, src, dst, rtt = _random_block(2)
    fitted = bl.fit(bl.Observations(src, dst, rtt, np.arange(len(rtt))))
    dst_pred = bl.predict(fitted, "dst_median", src, dst)
    preds = bl.context_predictions(bl.pair_context(record, src, dst, rtt), dst_pred)
    ctx = bl.pair_context(record, src, dst, rtt)
    for name, values in zip(bl.CONTEXT_NAMES, (ctx.last, ctx.mean_last3, ctx.ewma)):
        none = np.isnan(values)
        assert none.any() and (~none).any()
        np.testing.assert_array_equal(preds[name].value[none], dst_pred.value[none])
        np.testing.assert_array_equal(preds[name].value[~none], values[~none])
        assert bl.metrics(rtt, preds[name])["fallback"]["dst_median"] == pytest.approx(none.mean())


def test_source_context_matches_a_per_row_reference():
    record, src, dst, rtt = _random_block(3)
    ok = rtt > 0
    targets, earlier = co.source_context(record, src, ok)
    got = sorted(zip(targets.tolist(), earlier.tolist()))
    want = sorted((i, j) for i in range(len(rtt)) for j in range(i)
                  if record[j] == record[i] and src[j] == src[i] and ok[j])
    assert got == want and len(want) > 100


def _ridge(rows, reg):
    """Solve min sum (t - z.x)^2 + reg * len(rows) * |x|^2 for rows [(z, t, w)], by hand-built normal equations."""
    k1 = len(rows[0][0])
    a = [[0.0] * k1 for _ in range(k1)]
    rhs = [0.0] * k1
    total = 0.0
    for z, t, w in rows:
        total += w
        for i in range(k1):
            rhs[i] += w * z[i] * t
            for j in range(k1):
                a[i][j] += w * z[i] * z[j]
    for i in range(k1):
        a[i][i] += reg * total
    return np.linalg.solve(np.array(a), np.array(rhs))


def _mf_reference(src, dst, rtt, rank, reg, iters, seed):
    """ALS written per source and per destination with dicts (same start, same objective)."""
    good = [(s, d, math.log(max(r, co.MF_FLOOR_MS))) for s, d, r in zip(src.tolist(), dst.tolist(), rtt.tolist()) if r > 0]
    sources, dests = sorted({g[0] for g in good}), sorted({g[1] for g in good})
    pairs: dict = {}
    for s, d, y in good:
        pairs.setdefault((s, d), []).append(y)
    agg = {p: (sum(ys) / len(ys), len(ys)) for p, ys in pairs.items()}
    mu = sum(m * c for m, c in agg.values()) / sum(c for _, c in agg.values())
    v = dict(zip(dests, np.random.default_rng(seed).normal(0.0, 0.1, (len(dests), rank))))
    c = {d: 0.0 for d in dests}
    u, b = {}, {}
    for _ in range(iters):
        for s in sources:
            rows = [(np.append(v[d], 1.0), m - mu - c[d], w) for (s2, d), (m, w) in sorted(agg.items()) if s2 == s]
            x = _ridge(rows, reg)
            u[s], b[s] = x[:rank], x[rank]
        for d in dests:
            rows = [(np.append(u[s], 1.0), m - mu - b[s], w) for (s, d2), (m, w) in sorted(agg.items()) if d2 == d]
            x = _ridge(rows, reg)
            v[d], c[d] = x[:rank], x[rank]
    return mu, u, b, v, c


def test_factorization_fit_matches_a_per_source_reference():
    record, src, dst, rtt = _random_block(4)
    model = co.fit_factorization(src, dst, rtt, rank=3, reg=0.3, iters=4, seed=5)
    mu, u, b, v, c = _mf_reference(src, dst, rtt, 3, 0.3, 4, 5)
    assert model.mu == pytest.approx(mu)
    for row, s in enumerate(model.src_keys.tolist()):
        np.testing.assert_allclose(model.u[row], u[s], rtol=1e-7, atol=1e-9)
        assert model.b[row] == pytest.approx(b[s])
    for row, d in enumerate(model.dst_keys.tolist()):
        np.testing.assert_allclose(model.v[row], v[d], rtol=1e-7, atol=1e-9)
        assert model.c[row] == pytest.approx(c[d])


def _unseen_block(seed):
    """A train block and an evaluated block of whole records whose sources are all new."""
    record, src, dst, rtt = _random_block(seed)
    rec_e, src_e, dst_e, rtt_e = _random_block(seed + 100, records=10)
    dst_e[:5] = 555  # a destination never in train: falls back to the global median
    return (src, dst, rtt), (rec_e, src_e + 1000, dst_e, rtt_e)


def test_factorization_fold_in_matches_a_per_measurement_reference():
    (src, dst, rtt), (rec_e, src_e, dst_e, rtt_e) = _unseen_block(6)
    model = co.fit_factorization(src, dst, rtt, rank=3, reg=0.2, iters=3)
    fitted = bl.fit(bl.Observations(src, dst, rtt, np.arange(len(rtt))))
    fallback = bl.predict(fitted, "dst_median", src_e, dst_e)
    got = co.predict_factorization(model, rec_e, src_e, dst_e, rtt_e, fallback)
    drow = {d: i for i, d in enumerate(model.dst_keys.tolist())}
    for i in range(len(rtt_e)):
        ctx = [j for j in range(i) if rec_e[j] == rec_e[i] and src_e[j] == src_e[i] and rtt_e[j] > 0
               and dst_e[j] in drow]
        if not ctx or dst_e[i] not in drow:
            assert got.value[i] == fallback.value[i] and got.level[i] == min(fallback.level[i] + 1, 2), i
            continue
        rows = [(np.append(model.v[drow[dst_e[j]]], 1.0),
                 math.log(max(rtt_e[j], co.MF_FLOOR_MS)) - model.mu - model.c[drow[dst_e[j]]], 1.0) for j in ctx]
        x = _ridge(rows, model.reg)
        d = drow[dst_e[i]]
        want = math.exp(model.mu + x[-1] + model.c[d] + float(np.dot(x[:-1], model.v[d])))
        assert got.value[i] == pytest.approx(want, rel=1e-9), i
        assert got.level[i] == 0


def _vivaldi_reference(x, h, pairs, rounds, movable, hi=0.5, lo=0.05, batches=None):
    """The batched Vivaldi rounds, one spring at a time with Python floats; with ``batches`` (lists of pair
    indices) round t uses batch t mod len(batches) and the nodes' degrees in it."""
    x = [list(map(float, row)) for row in x]
    h = [float(v) for v in h]
    all_pairs = pairs
    for t in range(rounds):
        if batches is not None:
            pairs = [all_pairs[k] for k in batches[t % len(batches)]]
        deg = [0.0] * len(x)
        for i, j, _ in pairs:
            deg[i] += 1
            deg[j] += 1
        step = hi + (lo - hi) * t / max(rounds - 1, 1)
        fx = [[0.0] * len(x[0]) for _ in x]
        fh = [0.0] * len(x)
        for i, j, r in pairs:
            diff = [a - b for a, b in zip(x[i], x[j])]
            dist = math.sqrt(sum(d * d for d in diff))
            err = r - (dist + h[i] + h[j])
            for k, d in enumerate(diff):
                fx[i][k] += err * d / dist
                fx[j][k] -= err * d / dist
            fh[i] += err
            fh[j] += err
        for n in range(len(x)):
            if movable[n] and deg[n]:
                x[n] = [a + step * f / deg[n] for a, f in zip(x[n], fx[n])]
                h[n] = max(h[n] + step * fh[n] / deg[n], 0.0)
    return np.array(x), np.array(h)


def test_vivaldi_rounds_match_a_per_spring_reference():
    rng = np.random.default_rng(7)
    x, h = rng.normal(0, 10, (8, 3)), rng.uniform(0, 2, 8)
    i = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 1])
    j = np.array([4, 5, 5, 6, 7, 7, 2, 0, 1, 3])
    r = rng.uniform(5, 50, len(i))
    movable = np.ones(8, bool)
    movable[[2, 6]] = False
    got_x, got_h = co._vivaldi_rounds(x, h, i, j, r, np.ones(len(i)), 25, 0.5, 0.05, movable, 0)
    want_x, want_h = _vivaldi_reference(x, h, list(zip(i, j, r)), 25, movable)
    np.testing.assert_allclose(got_x, want_x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got_x[[2, 6]], x[[2, 6]])  # fixed nodes never move


def test_vivaldi_rounds_over_spring_batches_match_a_per_spring_reference():
    rng = np.random.default_rng(9)
    x, h = rng.normal(0, 10, (8, 3)), rng.uniform(0, 2, 8)
    i = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 1, 2])
    j = np.array([4, 5, 5, 6, 7, 7, 2, 0, 1, 3, 4])
    r = rng.uniform(5, 50, len(i))
    batches = co.spring_batches(len(i), 4, 3)
    assert [len(b) for b in batches] == [4, 4, 3]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(i)))  # every pair, once per cycle
    movable = np.ones(8, bool)
    got_x, got_h = co._vivaldi_rounds(x, h, i, j, r, np.ones(len(i)), 25, 0.5, 0.05, movable, 3, batch=4)
    want_x, want_h = _vivaldi_reference(x, h, list(zip(i, j, r)), 25, movable,
                                        batches=[b.tolist() for b in batches])
    np.testing.assert_allclose(got_x, want_x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-9, atol=1e-9)
    assert co.spring_batches(len(i), 11, 3)[0].tolist() == list(range(len(i)))  # a batch that covers all: every round


def test_vivaldi_fold_in_matches_a_per_measurement_reference():
    (src, dst, rtt), (rec_e, src_e, dst_e, rtt_e) = _unseen_block(8)
    model = co.fit_vivaldi(src, dst, rtt, dims=2, rounds=30)
    fitted = bl.fit(bl.Observations(src, dst, rtt, np.arange(len(rtt))))
    fallback = bl.predict(fitted, "dst_median", src_e, dst_e)
    got = co.predict_vivaldi(model, rec_e, src_e, dst_e, rtt_e, fallback, rounds=10)
    row = {a: i for i, a in enumerate(model.keys.tolist())}
    checked = 0
    for i in range(len(rtt_e)):
        ctx = [j for j in range(i) if rec_e[j] == rec_e[i] and src_e[j] == src_e[i] and rtt_e[j] > 0
               and dst_e[j] in row]
        if not ctx or dst_e[i] not in row:
            assert got.value[i] == fallback.value[i], i
            continue
        nodes = np.vstack([model.x, model.start_x])
        heights = np.append(model.h, model.start_h)
        movable = np.zeros(len(nodes), bool)
        movable[-1] = True
        x, h = _vivaldi_reference(nodes, heights, [(len(nodes) - 1, row[dst_e[j]], rtt_e[j]) for j in ctx], 10, movable)
        d = row[dst_e[i]]
        want = float(np.linalg.norm(x[-1] - model.x[d]) + h[-1] + model.h[d])
        assert got.value[i] == pytest.approx(want, rel=1e-9), i
        checked += 1
    assert checked > 50


def _geography(seed=0, sources=240, dests=60, per=16):
    """Sources and destinations at points of a 2-D plane; RTT = distance + each end's access delay, times
    5% lognormal noise; 3% failures. One record per source (``per`` measurements in file order); the first
    180 sources are train, the others are never seen in train."""
    rng = np.random.default_rng(seed)
    ps, pd = rng.uniform(0, 100, (sources, 2)), rng.uniform(0, 100, (dests, 2))
    acc_s, acc_d = rng.uniform(0, 5, sources), rng.uniform(0, 5, dests)
    src = np.repeat(np.arange(sources), per)
    dst = rng.integers(0, dests, len(src))
    rtt = (np.linalg.norm(ps[src] - pd[dst], axis=1) + acc_s[src] + acc_d[dst] + 1) * rng.lognormal(0, 0.05, len(src))
    rtt[rng.random(len(src)) < 0.03] = -1.0
    train = src < 180
    return src, dst + 10_000, rtt, src.copy(), train


def test_coordinates_beat_the_destination_median_on_geography_with_unseen_sources():
    src, dst, rtt, record, train = _geography()
    fitted = bl.fit(bl.Observations(src[train], dst[train], rtt[train], np.arange(train.sum())))
    mf = co.fit_factorization(src[train], dst[train], rtt[train], rank=4, reg=0.05)
    viv = co.fit_vivaldi(src[train], dst[train], rtt[train], dims=2)
    te = ~train
    dst_pred = bl.predict(fitted, "dst_median", src[te], dst[te])
    base = bl.metrics(rtt[te], dst_pred)["median_abs_error_ms"]
    # A measurement can be placed iff an earlier successful measurement of its source is in the record.
    placed, seen_ok = [], set()
    for r, x in zip(record[te].tolist(), rtt[te].tolist()):
        placed.append(r in seen_ok)
        if x > 0:
            seen_ok.add(r)
    placed = np.array(placed)
    assert 0.8 < placed.mean() < 1.0
    for pred in (co.predict_factorization(mf, record[te], src[te], dst[te], rtt[te], dst_pred),
                 co.predict_vivaldi(viv, record[te], src[te], dst[te], rtt[te], dst_pred)):
        m = bl.metrics(rtt[te], pred)
        assert m["median_abs_error_ms"] < 0.6 * base, (m["median_abs_error_ms"], base)
        assert m["fallback"]["dst_median"] == pytest.approx(1 - placed.mean())  # every fallback counted
        np.testing.assert_array_equal(pred.level == 0, placed)
        np.testing.assert_array_equal(pred.value[~placed], dst_pred.value[~placed])
    # Without the context (every source's first measurement only), the same models cannot place anyone.
    first = np.r_[True, record[te][1:] != record[te][:-1]]
    alone = co.predict_factorization(mf, record[te][first], src[te][first], dst[te][first], rtt[te][first],
                                     dst_pred.take(first))
    assert (alone.level == 1).all()


def test_known_sources_answer_from_their_own_factors():
    src, dst, rtt, record, train = _geography(seed=1)
    mf = co.fit_factorization(src[train], dst[train], rtt[train], rank=4, reg=0.05)
    fitted = bl.fit(bl.Observations(src[train], dst[train], rtt[train], np.arange(train.sum())))
    tr = train
    dst_pred = bl.predict(fitted, "dst_median", src[tr], dst[tr])
    pred = co.predict_factorization(mf, record[tr], src[tr], dst[tr], rtt[tr], dst_pred)
    assert (pred.level[rtt[tr] > 0] == 0).all()
    s = np.searchsorted(mf.src_keys, src[tr][5])
    d = np.searchsorted(mf.dst_keys, dst[tr][5])
    assert pred.value[5] == pytest.approx(math.exp(mf.mu + mf.b[s] + mf.c[d] + mf.u[s] @ mf.v[d]))
