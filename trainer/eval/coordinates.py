"""The field's latency predictors: biased matrix factorisation of log RTT and Vivaldi coordinates.

Both are fitted on the train split and answer from a model of every address:

* ``matrix_factorization``: ``log rtt(s, d) ~ mu + b_s + c_d + u_s . v_d`` (rank ``k``), fitted by
  **alternating least squares** (ALS) on the train measurements: with the destinations fixed, every
  source's ``(u_s, b_s)`` is one ridge regression, solved for all sources at once as a batch of
  ``(k+1) x (k+1)`` systems; then the same for the destinations. Deterministic (seeded start, exact
  solves) and free of step sizes, which is why ALS rather than DMFSGD's stochastic gradient steps; the
  objective is the same (squared error of log RTT plus an L2 penalty). The penalty is ``reg`` times the
  number of measurements behind each row (ALS-WR), so a source seen once is pulled to the mean as
  strongly relative to its data as one seen a thousand times.
* ``vivaldi``: every address gets a Euclidean coordinate plus a height (Dabek et al., SIGCOMM 2004);
  ``rtt(a, b) ~ |x_a - x_b| + h_a + h_b``. Fitted by rounds of Vivaldi's spring update applied to a batch
  of train pairs at once (all of them when there are at most ``VIVALDI_BATCH``): each pair pulls or pushes
  its two ends along their difference by the prediction error, each node moves by the mean of its forces
  times a step that shrinks over the rounds (a deterministic, batched form of the per-sample update;
  heights move by the same error and stay >= 0).

**Unseen sources** (``--split_by src``: no test source is in train) are placed from their earlier
measurements in the same record, the information the model has: a ridge least-squares fold-in of
``(u, b)`` with the destinations' factors fixed, and Vivaldi updates of a new coordinate against the
destinations' fixed ones. A measurement whose source is unseen and has no earlier successful
measurement in the record to a train destination, or whose destination is not in train, falls back to
the destination median (and that to the global median); the report counts those fallbacks.

Fitting works on per-pair aggregates (mean log RTT and count for the factorisation, median RTT for
Vivaldi), so its cost grows with the number of distinct pairs, not with the measurements.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses

import numpy as np
import scipy.sparse

from trainer.eval.baselines import Prediction, _fill, _find, _keys, group_quantiles

MF = "matrix_factorization"
VIVALDI = "vivaldi"
MF_FLOOR_MS = 0.1  # RTTs below this are raised to it before the log (sub-0.1 ms pings are loopback noise)
MF_RANK = 16  # rank, regularisation and iterations: chosen on the RIPE Atlas file's validation split
MF_REG = 0.03  # (docs/evaluation.md: ranks 4-16, regs 0.001-0.1, 4-12 iterations tried)
MF_ITERS = 8
VIVALDI_DIMS = 8  # chosen there too (2, 4 and 8 tried)
VIVALDI_ROUNDS = 200
# Springs per round (spring_batches); data with fewer pairs updates all of them every round. Chosen on the
# 2M-row benchmark dataset's validation split (the RIPE file has fewer pairs): 1.5 ms better than every
# pair every round, at a fifth of the cost.
VIVALDI_BATCH = 1 << 16
FOLD_ROUNDS = 60  # Vivaldi updates of a folded-in source
FOLD_CONTEXT = 0  # earlier measurements a fold-in uses: the latest this many (0: all)


# ----------------------------------------------------------------------------------------------------------
# Earlier measurements of the same source in the same record


def source_context(record, src, ok, latest: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(target, earlier)`` of row indices (file order): ``earlier`` is a measurement of the same
    source, before ``target`` in the same record, with ``ok`` true (a usable RTT); with ``latest`` > 0 only
    the ``latest`` last such ones before ``target``. Vectorized by lag: the rows sorted by (record,
    source, position) put a source's measurements of a record together, so the ``d``-th earlier one is
    ``d`` sorted rows back, for ``d`` up to the longest group."""
    n = len(ok)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), _keys(src), np.asarray(record)))
    s_rec, s_src = np.asarray(record)[order], _keys(src)[order]
    new = np.ones(n, bool)
    new[1:] = (s_rec[1:] != s_rec[:-1]) | (s_src[1:] != s_src[:-1])
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    rank = np.arange(n) - start  # position within the group
    s_ok = np.asarray(ok)[order]
    usable = np.concatenate([[0], np.cumsum(s_ok)])  # usable[p]: usable sorted rows before p
    targets, earlier = [], []
    for d in range(1, int(rank.max()) + 1):
        p = np.flatnonzero(rank >= d)
        q = p - d
        keep = s_ok[q]
        if latest > 0:  # q is among the `latest` last usable rows before p
            keep &= usable[p] - usable[q + 1] < latest
        targets.append(order[p[keep]])
        earlier.append(order[q[keep]])
    if not targets:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(targets).astype(np.int64), np.concatenate(earlier).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# Matrix factorisation


@dataclasses.dataclass(frozen=True)
class Factorization:
    """A fitted biased factorisation of log RTT (see the module docstring)."""

    mu: float
    src_keys: np.ndarray  # sorted distinct train sources
    dst_keys: np.ndarray  # sorted distinct train destinations
    u: np.ndarray  # (sources, rank)
    b: np.ndarray  # (sources,)
    v: np.ndarray  # (destinations, rank)
    c: np.ndarray  # (destinations,)
    reg: float


def _group_plan(group: np.ndarray, groups: int, k1: int) -> list:
    """Where :func:`_ridge_by_group` puts each row in its padded stacks: for every (size class, chunk), the
    chunk's groups, the stack's width and, per slot of the flat ``(groups * width)`` stack, the row that
    fills it (-1: padding). It depends only on the grouping, so the ALS fit builds it once for all its
    iterations."""
    n = len(group)
    plan = []
    if not n:
        return plan
    order = np.argsort(group, kind="stable")
    g_sorted = group[order]
    count = np.bincount(group, minlength=groups)
    first = np.cumsum(count) - count
    pos = np.arange(n) - first[g_sorted]  # row's position within its group
    size_class = np.ceil(np.log2(np.maximum(count, 1))).astype(np.int64)
    row_class = size_class[g_sorted]
    for c in np.unique(size_class[count > 0]):
        width = 1 << int(c)
        members = np.flatnonzero((size_class == c) & (count > 0))
        rows = np.flatnonzero(row_class == c)  # sorted rows of this class, grouped
        per_chunk = max(1, (1 << 22) // (width * k1))
        slot_of = np.full(groups, -1, np.int64)
        for lo in range(0, len(members), per_chunk):
            chunk = members[lo : lo + per_chunk]
            slot_of[chunk] = np.arange(len(chunk))
            r = rows[(g_sorted[rows] >= chunk[0]) & (g_sorted[rows] <= chunk[-1])]
            pad = np.full(len(chunk) * width, -1, np.int64)
            pad[slot_of[g_sorted[r]] * width + pos[r]] = order[r]
            plan.append((chunk, width, pad))
    return plan


def _ridge_by_group(group: np.ndarray, groups: int, z: np.ndarray, t: np.ndarray, w: np.ndarray, reg: float,
                    plan: list | None = None, z_rows: np.ndarray | None = None, pool=None):
    """For every group g: argmin_x sum_i w_i (t_i - z_i . x)^2 + reg * W_g |x|^2 over the group's rows
    (W_g the group's total weight), as batches of small solves. Row i's features are ``z[i]``, or with
    ``z_rows``, ``z[z_rows[i]]`` (a table of the other side's factors).

    Normal matrices come from batched matrix products: groups of similar size (the same power of two) are
    padded to that size and stacked, so one ``matmul`` forms all their ``Z^T W Z`` at once (at most twice
    the work of the exact sizes, no per-group Python); chunks keep each stack under ~32 MB. ``plan``
    (from :func:`_group_plan` for this ``group``) saves recomputing the layout. A stack is one gather
    from the table with a zero row appended, which the padding slots point at. With ``pool`` (a thread
    pool) the stacks are formed by its workers (the same arithmetic per stack, so the same result)."""
    k1 = z.shape[1]
    a = np.zeros((groups, k1, k1))
    rhs = np.zeros((groups, k1))
    if plan is None:
        plan = _group_plan(group, groups, k1)
    z_ext = np.vstack([z, np.zeros((1, k1))])  # the last row: padding
    row_ext = np.append(np.arange(len(z)) if z_rows is None else z_rows, len(z))  # row -1 (padding) -> zero row
    w_ext, wt_ext = np.append(w, 0.0), np.append(w * t, 0.0)  # index -1 (padding) -> 0

    def stack(item):
        chunk, width, pad = item
        zp = np.take(z_ext, np.take(row_ext, pad), axis=0)
        wt = np.stack([np.take(w_ext, pad), np.take(wt_ext, pad)], axis=-1)  # per padded row: [w, w * t]
        zp = zp.reshape(len(chunk), width, k1)  # (groups, width, k1)
        wt = wt.reshape(len(chunk), width, 2)
        a[chunk] = np.matmul(zp.transpose(0, 2, 1) * wt[:, None, :, 0], zp)  # (groups, k1, k1)
        rhs[chunk] = np.matmul(zp.transpose(0, 2, 1), wt[:, :, 1:])[..., 0]  # (groups, k1)

    if pool is not None and len(plan) > 1:  # chunks are independent (disjoint groups): numpy releases the GIL
        list(pool.map(stack, plan))
    else:
        for item in plan:
            stack(item)
    total = np.bincount(group, weights=w, minlength=groups)
    a += (reg * np.maximum(total, 1e-9))[:, None, None] * np.eye(k1)
    return np.linalg.solve(a, rhs[..., None])[..., 0]  # (groups, k1)


def _pair_aggregates(src, dst, rtt):
    """Distinct (src row, dst row) pairs of the successful measurements: mean log RTT and count."""
    ok = rtt > 0
    src_keys, si = np.unique(_keys(src)[ok], return_inverse=True)
    dst_keys, di = np.unique(_keys(dst)[ok], return_inverse=True)
    si, di = si.reshape(-1).astype(np.int64), di.reshape(-1).astype(np.int64)
    code = si * max(len(dst_keys), 1) + di
    pairs, pi = np.unique(code, return_inverse=True)
    pi = pi.reshape(-1)
    count = np.bincount(pi, minlength=len(pairs)).astype(np.float64)
    return src_keys, dst_keys, pairs // max(len(dst_keys), 1), pairs % max(len(dst_keys), 1), pi, count, ok


def fit_factorization(src, dst, rtt, *, rank: int = MF_RANK, reg: float = MF_REG, iters: int = MF_ITERS,
                      seed: int = 0) -> Factorization:
    """Fit :class:`Factorization` by ALS on the successful train measurements (count-weighted pair means)."""
    rtt = np.asarray(rtt, np.float64)
    src_keys, dst_keys, ps, pd, pi, count, ok = _pair_aggregates(src, dst, rtt)
    y_all = np.log(np.maximum(rtt[ok], MF_FLOOR_MS))
    y = np.bincount(pi, weights=y_all, minlength=len(count)) / np.maximum(count, 1)  # (pairs,) mean log RTT
    return fit_factorization_pairs(src_keys, dst_keys, ps, pd, y, count, rank=rank, reg=reg, iters=iters, seed=seed)


def fit_factorization_pairs(src_keys, dst_keys, ps, pd, y, count, *, rank: int = MF_RANK, reg: float = MF_REG,
                            iters: int = MF_ITERS, seed: int = 0) -> Factorization:
    """:func:`fit_factorization` from per-pair aggregates: pair ``p`` joins source row ``ps[p]`` of
    ``src_keys`` and destination row ``pd[p]`` of ``dst_keys`` (pairs sorted by (ps, pd)), with mean log RTT
    ``y[p]`` over ``count[p]`` successful measurements. Memory and time grow with the pairs, not the rows."""
    mu = float(np.sum(y * count) / max(count.sum(), 1))
    ns, nd = len(src_keys), len(dst_keys)
    rng = np.random.default_rng(seed)
    u, b = np.zeros((ns, rank)), np.zeros(ns)
    v, c = rng.normal(0.0, 0.1, (nd, rank)), np.zeros(nd)
    plan_s, plan_d = _group_plan(ps, ns, rank + 1), _group_plan(pd, nd, rank + 1)  # fixed over the iterations
    # One pool of two workers for every iteration (threads made once: each new thread would bring its own
    # malloc arena, and the process's memory grows with them).
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(iters):  # features: the other side's factors, then a 1 for the bias
            x = _ridge_by_group(ps, ns, np.hstack([v, np.ones((nd, 1))]), y - mu - c[pd], count, reg, plan_s, pd, pool)
            u, b = x[:, :rank], x[:, rank]  # x: (ns, rank + 1)
            x = _ridge_by_group(pd, nd, np.hstack([u, np.ones((ns, 1))]), y - mu - b[ps], count, reg, plan_d, ps, pool)
            v, c = x[:, :rank], x[:, rank]
    return Factorization(mu, src_keys, dst_keys, u, b, v, c, reg)


def _unseen_context(record, src, rtt, known, d_row, latest: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, earlier)`` pairs of :func:`source_context` for the measurements whose source is not in
    train (``~known``), limited to earlier successful measurements to train destinations (the ``latest``
    last of them, 0: all): what a fold-in may use."""
    targets, earlier = source_context(record, src, (rtt > 0) & (d_row >= 0), latest)
    pick = ~known[targets]
    return targets[pick], earlier[pick]


def _from_train(src_keys, dst_keys, vectors, scalars, record, src, dst, rtt, context: int) -> tuple:
    """What both fold-in predictors start from, for measurements of whole records ((n,) each, file order):
    ``(rtt, d_row, vec, scalar, known, targets, earlier)``: the RTTs as float64, each destination's row in
    the model (-1: not in train), each train source's vector and scalar (factors and bias, or coordinate and
    height; zeros for an unseen source), which sources are in train, and the unseen sources' fold-in pairs
    (:func:`_unseen_context`, the ``context`` latest)."""
    rtt = np.asarray(rtt, np.float64)
    n = len(rtt)
    s_row, d_row = _find(src_keys, _keys(src)), _find(dst_keys, _keys(dst))
    vec, scalar = np.zeros((n, vectors.shape[1])), np.zeros(n)
    known = s_row >= 0
    vec[known], scalar[known] = vectors[s_row[known]], scalars[s_row[known]]
    return rtt, d_row, vec, scalar, known, *_unseen_context(record, src, rtt, known, d_row, context)


def predict_factorization(model: Factorization, record, src, dst, rtt, fallback: Prediction, *,
                          context: int = FOLD_CONTEXT) -> Prediction:
    """Predictions for measurements of whole records ((n,) each, file order): a train source answers from
    its factors; an unseen one from a fold-in on its earlier measurements in the record; else ``fallback``
    (the destination median) answers, one level coarser (``dst_median``), or at its own level beyond."""
    rtt, d_row, u, b, known, targets, earlier = _from_train(model.src_keys, model.dst_keys, model.u, model.b,
                                                            record, src, dst, rtt, context)
    n, rank = len(rtt), model.u.shape[1]
    folded = np.zeros(n, bool)
    # Fold-in: unseen sources from their earlier successful measurements to train destinations.
    if len(targets):
        group_rows, group = np.unique(targets, return_inverse=True)
        group = group.reshape(-1)
        d = d_row[earlier]
        z = np.hstack([model.v[d], np.ones((len(d), 1))])
        t = np.log(np.maximum(rtt[earlier], MF_FLOOR_MS)) - model.mu - model.c[d]
        x = _ridge_by_group(group, len(group_rows), z, t, np.ones(len(d)), model.reg)
        u[group_rows], b[group_rows] = x[:, :rank], x[:, rank]
        folded[group_rows] = True
    answers = (known | folded) & (d_row >= 0)
    dr = np.maximum(d_row, 0)
    log_pred = model.mu + b + model.c[dr] + np.einsum("nk,nk->n", u, model.v[dr]) if len(model.c) else np.zeros(n)
    value = np.where(answers, np.exp(log_pred), np.nan)
    return _point_with_fallback(value, answers, fallback)


def _point_with_fallback(value, answers, fallback: Prediction) -> Prediction:
    """A point prediction where ``answers`` (failure probability from ``fallback``, no interval), else
    ``fallback`` one level coarser: the destination median answering is a fallback here."""
    n = len(value)
    nan = np.full(n, np.nan)
    own = Prediction(value, nan, nan, fallback.fail_prob, np.zeros(n, np.int64))
    shifted = dataclasses.replace(fallback, level=np.minimum(fallback.level + 1, 2))
    out = _fill(own, answers, shifted, 0)
    return dataclasses.replace(out, low=nan, high=nan.copy())


# ----------------------------------------------------------------------------------------------------------
# Vivaldi


@dataclasses.dataclass(frozen=True)
class Vivaldi:
    """Fitted Vivaldi coordinates (see the module docstring)."""

    keys: np.ndarray  # sorted distinct train addresses (sources and destinations share one space)
    x: np.ndarray  # (addresses, dims)
    h: np.ndarray  # (addresses,) heights >= 0
    start_x: np.ndarray  # (dims,) where a folded-in source starts: the mean train source coordinate
    start_h: float  # and height: the median train source height


def spring_batches(pairs: int, batch: int, seed: int) -> list[np.ndarray]:
    """The pairs each Vivaldi round updates: all of them when ``batch`` is 0 or covers them; else a seeded
    shuffle cut into ``ceil(pairs / batch)`` near-equal batches (each sorted, so sums stay in pair order),
    visited in turn. Vivaldi is a per-sample stochastic method to begin with; a round over a batch costs
    ``batch`` springs instead of every pair, so a fit's cost stops growing with the distinct pairs."""
    if batch <= 0 or pairs <= batch:
        return [np.arange(pairs)]
    perm = np.random.default_rng((seed, 1)).permutation(pairs)
    return [np.sort(part) for part in np.array_split(perm, -(-pairs // batch))]


def _vivaldi_rounds(x, h, i, j, r, w, rounds, step_hi, step_lo, movable, seed, batch: int = 0):
    """``rounds`` batched Vivaldi updates of the nodes in ``movable`` over the pairs (i, j, r, w); with
    ``batch``, round ``t`` uses the ``t``-th of :func:`spring_batches` (cyclically), each node moving by the
    mean force of its springs in that batch.

    Each node's force is the sum of its pairs' forces, in pair order. Two fixed sparse incidence matrices
    (node x pair, ones) do that sum for all dimensions and the height at once: ``csr @ dense`` adds every
    row's entries in column (pair) order from zero, exactly what a ``np.bincount`` per dimension does, so
    the result is bit-identical to it at a fraction of the cost (one pass instead of 2 x (dims + 1)).
    ``np.take`` gathers rows like ``x[i]`` does, faster."""
    rng = np.random.default_rng(seed)
    nodes, dims = x.shape
    if len(i) and movable[i].all() and not movable[j].any():
        deg = np.bincount(i, weights=w, minlength=nodes) + np.bincount(j, weights=w, minlength=nodes)
        return _fold_rounds(x, h, i, j, r, w, rounds, step_hi, step_lo, movable, np.maximum(deg, 1e-12), rng)
    springs = []  # per batch: its pairs, their two incidence matrices and the nodes' degrees in it
    for pick in spring_batches(len(i), batch, seed):
        bi, bj, bw = i[pick], j[pick], w[pick]
        pair = np.arange(len(pick))
        ones = np.ones(len(pick))
        deg = np.bincount(bi, weights=bw, minlength=nodes) + np.bincount(bj, weights=bw, minlength=nodes)
        springs.append((bi, bj, r[pick], bw, np.maximum(deg, 1e-12),
                        scipy.sparse.csr_matrix((ones, (bi, pair)), shape=(nodes, len(pick))),  # in pair order
                        scipy.sparse.csr_matrix((ones, (bj, pair)), shape=(nodes, len(pick)))))
    forces = np.empty((max(len(s[0]) for s in springs), dims + 1))  # per pair: force on i, then w * err (height)
    for t in range(rounds):
        i, j, r, w, deg, on_i, on_j = springs[t % len(springs)]
        forces_t = forces[: len(i)]
        step = step_hi + (step_lo - step_hi) * t / max(rounds - 1, 1)
        diff = np.take(x, i, axis=0) - np.take(x, j, axis=0)  # (pairs, dims)
        dist = np.sqrt(np.einsum("pd,pd->p", diff, diff))
        zero = dist < 1e-9
        if zero.any():  # coincident ends: push apart in a random (seeded) direction, as Vivaldi does
            diff[zero] = rng.normal(size=(int(zero.sum()), dims))
            dist[zero] = np.sqrt(np.einsum("pd,pd->p", diff[zero], diff[zero]))
        err = r - (dist + np.take(h, i) + np.take(h, j))  # > 0: too close, push apart
        np.multiply((w * err / dist)[:, None], diff, out=forces_t[:, :dims])  # on i; the opposite on j
        forces_t[:, dims] = w * err
        sum_i, sum_j = on_i @ forces_t, on_j @ forces_t  # (nodes, dims + 1) each
        fx = sum_i[:, :dims] - sum_j[:, :dims]
        fh = sum_i[:, dims] + sum_j[:, dims]
        x = np.where(movable[:, None], x + step * fx / deg[:, None], x)
        h = np.where(movable, np.maximum(h + step * fh / deg, 0.0), h)
    return x, h


def _fold_rounds(x, h, i, j, r, w, rounds, step_hi, step_lo, movable, deg, rng):
    """:func:`_vivaldi_rounds` when every pair's ``i`` end moves and no ``j`` end does (the fold-in of unseen
    sources against fixed train destinations): the same arithmetic, in the same order, restricted to the
    movable nodes, with the fixed ends gathered once. A movable node is never a ``j`` end, so its sum over
    ``j`` is an exact 0.0 (kept in the formulas below so the results stay bit-identical)."""
    dims = x.shape[1]
    moving = np.flatnonzero(movable)
    local = np.full(len(x), -1, np.int64)
    local[moving] = np.arange(len(moving))
    li = local[i]
    xj, hj = np.take(x, j, axis=0), np.take(h, j)
    xm, hm, dm = x[moving], h[moving], deg[moving]
    on_i = scipy.sparse.csr_matrix((np.ones(len(i)), (li, np.arange(len(i)))), shape=(len(moving), len(i)))
    # Every per-pair temporary is allocated once and written in place each round, contiguous: the force
    # on i in ``diff`` itself and ``w * err`` in its own vector (csr @ dense adds each column in pair
    # order, so two products give the bits one product of the stacked (pairs, dims + 1) array gives).
    # Rows of ``xm`` are gathered as one 8 * dims-byte item each, which np.take copies faster than rows.
    diff, dist, err, werr = np.empty((len(i), dims)), np.empty(len(i)), np.empty(len(i)), np.empty(len(i))
    row = np.dtype((np.void, 8 * dims))
    diff_rows = diff.view(row).reshape(-1)
    for t in range(rounds):
        step = step_hi + (step_lo - step_hi) * t / max(rounds - 1, 1)
        np.take(np.ascontiguousarray(xm).view(row).reshape(-1), li, out=diff_rows)  # diff = xm[li]
        diff -= xj
        np.einsum("pd,pd->p", diff, diff, out=dist)
        np.sqrt(dist, out=dist)
        zero = dist < 1e-9
        if zero.any():
            diff[zero] = rng.normal(size=(int(zero.sum()), dims))
            dist[zero] = np.sqrt(np.einsum("pd,pd->p", diff[zero], diff[zero]))
        np.take(hm, li, out=err)
        np.add(dist, err, out=err)
        err += hj
        np.subtract(r, err, out=err)  # r - (dist + h_i + h_j)
        np.multiply(w, err, out=werr)
        np.divide(werr, dist, out=err)  # w * err / dist
        diff *= err[:, None]  # the force on i; the opposite on j
        sum_x, sum_h = on_i @ diff, on_i @ werr
        xm = xm + step * (sum_x - 0.0) / dm[:, None]
        hm = np.maximum(hm + step * (sum_h + 0.0) / dm, 0.0)
    x, h = x.copy(), h.copy()
    x[moving], h[moving] = xm, hm
    return x, h


def fit_vivaldi(src, dst, rtt, *, dims: int = VIVALDI_DIMS, rounds: int = VIVALDI_ROUNDS, batch: int = VIVALDI_BATCH,
                seed: int = 0) -> Vivaldi:
    """Fit :class:`Vivaldi` on the successful train measurements (one spring per pair at its median RTT)."""
    rtt = np.asarray(rtt, np.float64)
    ok = rtt > 0
    src_k, dst_k = _keys(src)[ok], _keys(dst)[ok]
    keys, inv = np.unique(np.concatenate([src_k, dst_k]), return_inverse=True)
    inv = inv.reshape(-1)
    si, di = inv[: len(src_k)], inv[len(src_k):]
    code = si.astype(np.int64) * max(len(keys), 1) + di
    pairs, pi = np.unique(code, return_inverse=True)
    (median,) = group_quantiles(pi.reshape(-1), rtt[ok], len(pairs), qs=(0.5,))
    i, j = pairs // max(len(keys), 1), pairs % max(len(keys), 1)
    return fit_vivaldi_pairs(keys, i, j, median, np.unique(si), dims=dims, rounds=rounds, batch=batch, seed=seed)


def fit_vivaldi_pairs(keys, i, j, median, sources, *, dims: int = VIVALDI_DIMS, rounds: int = VIVALDI_ROUNDS,
                      batch: int = VIVALDI_BATCH, seed: int = 0) -> Vivaldi:
    """:func:`fit_vivaldi` from per-pair aggregates: pair ``p`` joins rows ``i[p]`` and ``j[p]`` of ``keys``
    (pairs sorted by (i, j)) with median RTT ``median[p]``; ``sources`` are the rows that were sources."""
    rng = np.random.default_rng(seed)
    scale = float(np.median(median)) if len(median) else 1.0
    x = rng.normal(0.0, scale / 4, (len(keys), dims))
    h = np.zeros(len(keys))
    x, h = _vivaldi_rounds(x, h, i, j, median, np.ones(len(i)), rounds, 0.5, 0.05,
                           np.ones(len(keys), bool), seed + 1, batch)
    start_x = x[sources].mean(axis=0) if len(sources) else np.zeros(dims)
    start_h = float(np.median(h[sources])) if len(sources) else 0.0
    return Vivaldi(keys, x, h, start_x, start_h)


def predict_vivaldi(model: Vivaldi, record, src, dst, rtt, fallback: Prediction, *,
                    rounds: int = FOLD_ROUNDS, context: int = FOLD_CONTEXT) -> Prediction:
    """Like :func:`predict_factorization`: a train address answers from its coordinate; an unseen source
    is placed by Vivaldi updates against its earlier measurements' (fixed) destinations in the record."""
    rtt, d_row, xs, hs, known, targets, earlier = _from_train(model.keys, model.keys, model.x, model.h,
                                                              record, src, dst, rtt, context)
    n = len(rtt)
    folded = np.zeros(n, bool)
    if len(targets):
        group_rows, group = np.unique(targets, return_inverse=True)
        g = len(group_rows)
        # One movable node per folded-in measurement, after the fixed train nodes.
        x = np.vstack([model.x, np.tile(model.start_x, (g, 1))])
        h = np.concatenate([model.h, np.full(g, model.start_h)])
        movable = np.zeros(len(x), bool)
        movable[len(model.x):] = True
        i = len(model.x) + group.reshape(-1)
        j = d_row[earlier]
        x, h = _vivaldi_rounds(x, h, i, j, rtt[earlier], np.ones(len(i)), rounds, 0.5, 0.05, movable, 7)
        xs[group_rows], hs[group_rows] = x[len(model.x):], h[len(model.x):]
        folded[group_rows] = True
    answers = (known | folded) & (d_row >= 0)
    dr = np.maximum(d_row, 0)
    if len(model.x):
        value = np.sqrt(((xs - model.x[dr]) ** 2).sum(axis=1)) + hs + model.h[dr]
    else:
        value = np.zeros(n)
    return _point_with_fallback(np.where(answers, value, np.nan), answers, fallback)
