"""RTT baselines and the metrics that compare them with the model (pure numpy, no model, no I/O).

Baselines are fitted on the train split (:class:`Observations`: one row per measurement) and asked
about the evaluated measurements by source and destination:

* ``global_median``: the median of all successful train RTTs;
* ``dst_median``: the median for the destination;
* ``pair_median``: the median for the (source, destination) pair;
* ``pair_last``: the pair's most recent successful RTT (latest timestamp; file order breaks ties).

**Fallback.** A key with no successful train RTT cannot answer; the next coarser baseline answers
instead: pair -> destination -> global. With ``pretokenize --split_by src`` (the default) test sources
never occur in train, so the pair baselines fall back for every test measurement; each prediction
records the level that answered (:data:`LEVELS`), and the report gives how often each fallback fired.

Every baseline also predicts a failure probability (the answering key's share of failed train
measurements; for ``pair_last``, whether the pair's last measurement failed) and a 10-90% interval (the
answering key's 10th and 90th percentiles of successful RTTs; ``pair_last`` is a point prediction, so it
has none and no calibration figure).

A failed ping has ``rtt < 0`` (the data uses -1.0); a successful one ``rtt >= 0``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

NAMES = ("global_median", "dst_median", "pair_median", "pair_last")
LEVELS = ("own", "dst_median", "global_median")  # who answered: the key itself, or a fallback
LOG_FLOOR_MS = 1e-3  # predictions below this are raised to it before taking a log ratio


@dataclasses.dataclass(frozen=True)
class Observations:
    """Measurements as parallel arrays (n,)."""

    src: np.ndarray  # source address text
    dst: np.ndarray  # destination address text
    rtt: np.ndarray  # float64 ms; < 0 for a failure
    timestamp: np.ndarray  # int64 epoch seconds

    def __post_init__(self):
        n = len(self.rtt)
        if not all(len(a) == n for a in (self.src, self.dst, self.timestamp)):
            raise ValueError("Observations arrays must have the same length")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A predictor's answers for n measurements; NaN where it has none."""

    value: np.ndarray  # (n,) predicted RTT (ms) given success
    low: np.ndarray  # (n,) 10th percentile of the predicted RTT
    high: np.ndarray  # (n,) 90th percentile
    fail_prob: np.ndarray  # (n,) predicted probability that the ping fails
    level: np.ndarray  # (n,) int: index into LEVELS of who answered (0 for the model)

    def take(self, index) -> Prediction:
        """The predictions at ``index`` (an integer or boolean array)."""
        return Prediction(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: list) -> Prediction:
        if not parts:
            nan = np.zeros(0)
            return Prediction(nan, nan, nan, nan, np.zeros(0, np.int64))
        return Prediction(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Prediction)))


@dataclasses.dataclass(frozen=True)
class _Table:
    """Per-key statistics of successful RTTs; ``keys`` sorted, row ``i`` describes ``keys[i]``."""

    keys: np.ndarray
    median: np.ndarray
    p10: np.ndarray
    p90: np.ndarray
    fail_share: np.ndarray
    answers: np.ndarray  # bool: the key has at least one successful RTT


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own linear interpolation (``np.quantile``'s default method), so the results agree."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def stable_ranks(values: np.ndarray) -> np.ndarray:
    """(n,) each value's position in a stable sort of ``values`` (ties in array order): distinct integers
    that order the rows as the values do, to share one value sort between several group-bys."""
    ranks = np.empty(len(values), np.int64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def group_order(group: np.ndarray, values: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
    """The permutation ``np.lexsort((values, group))`` gives (by group, then value, ties in array order),
    from one integer sort: ``group * N + rank`` with the values' :func:`stable_ranks` (``ranks``: given,
    they may be a subset of ranks over a longer array, any ``N`` above them) has distinct keys, so any sort
    of them gives that one order. About half a ``lexsort``'s time, less when ``ranks`` are shared."""
    group = np.asarray(group, np.int64)
    if ranks is None:
        ranks = stable_ranks(values)
    span = int(ranks.max()) + 1 if len(ranks) else 1
    if len(group) and int(group.max()) >= (2**63 - 1) // span - 1:  # the key would overflow int64
        return np.lexsort((values, group))
    return np.argsort(group * span + ranks)


def group_quantiles(group: np.ndarray, values: np.ndarray, groups: int, qs=(0.1, 0.5, 0.9),
                    ranks: np.ndarray | None = None) -> list[np.ndarray]:
    """Per-group quantiles of ``values`` ((n,) each; ``group`` ints in [0, groups)), vectorized: one sort
    (:func:`group_order`; ``ranks`` as it takes them), then order statistics at each group's offsets. The
    median is the mean of the two middle values (``np.median``); other quantiles interpolate as
    ``np.quantile`` does. NaN for an empty group."""
    v = values[group_order(group, values, ranks)]
    count = np.bincount(group, minlength=groups)
    lo = np.cumsum(count) - count
    has = count > 0
    out = []
    for q in qs:
        res = np.full(groups, np.nan)
        c, base = count[has], lo[has]
        if q == 0.5:
            res[has] = (v[base + (c - 1) // 2] + v[base + c // 2]) / 2
        else:
            pos = q * (c - 1)
            f = np.floor(pos).astype(np.int64)
            h = np.minimum(f + 1, c - 1)
            res[has] = _lerp(v[base + f], v[base + h], pos - f)
        out.append(res)
    return out


def _table(key_index: np.ndarray, keys: np.ndarray, rtt: np.ndarray, ranks: np.ndarray | None = None) -> _Table:
    """Statistics per key; ``key_index`` (n,) is each measurement's row in ``keys`` (``ranks``: the RTTs'
    :func:`stable_ranks`, shared between tables)."""
    m = len(keys)
    ok = rtt >= 0
    total = np.bincount(key_index, minlength=m)
    fail_share = np.bincount(key_index, weights=(~ok).astype(np.float64), minlength=m) / np.maximum(total, 1)
    p10, median, p90 = group_quantiles(key_index[ok], rtt[ok], m, ranks=None if ranks is None else ranks[ok])
    answers = np.bincount(key_index[ok], minlength=m) > 0
    return _Table(keys, median, p10, p90, fail_share, answers)


def _find(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n,) row of each query in ``sorted_keys``, -1 where absent (a vectorized dictionary lookup)."""
    queries = np.asarray(queries)
    if not len(sorted_keys) or not len(queries):
        return np.full(len(queries), -1, np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == queries, at, -1).astype(np.int64)


def _keys(values) -> np.ndarray:
    """An array the group-bys can sort: integer ids stay integers, anything else (address text) objects."""
    arr = np.asarray(values)
    return arr if arr.dtype.kind in "iu" else np.asarray(values, dtype=object)


@dataclasses.dataclass(frozen=True)
class Baselines:
    """Statistics of the train split that the baselines answer from (see :func:`fit`)."""

    global_: _Table | None  # None only inside a fit over buckets, which finds it by order statistics
    dst: _Table
    pair: _Table  # keys: src row * len(src_keys) + dst row
    src_keys: np.ndarray  # sorted distinct train sources
    pair_last_value: np.ndarray  # per pair row: latest successful RTT (NaN if none)
    pair_last_failed: np.ndarray  # per pair row: whether the latest measurement failed


def fit(train: Observations) -> Baselines:
    """Fit the table baselines on the train measurements: sorts and group-bys, no per-row Python."""
    return fit_arrays(train)[0]


def fit_arrays(train: Observations, *, global_table: bool = True) -> tuple[Baselines, np.ndarray, np.ndarray]:
    """:func:`fit`, and what it computed on the way that a caller can reuse: each measurement's pair row
    and the RTTs' :func:`stable_ranks`. ``global_table=False`` leaves the global table out (``global_``
    None), for a caller that finds the global statistics another way (a fit over buckets)."""
    rtt = np.asarray(train.rtt, dtype=np.float64)
    n = len(rtt)
    src_keys, src_i = np.unique(_keys(train.src), return_inverse=True)
    dst_keys, dst_i = np.unique(_keys(train.dst), return_inverse=True)
    src_i, dst_i = src_i.reshape(-1).astype(np.int64), dst_i.reshape(-1).astype(np.int64)
    pair_code = src_i * max(len(dst_keys), 1) + dst_i
    pair_keys, pair_i = np.unique(pair_code, return_inverse=True)
    pair_i = pair_i.reshape(-1)
    # The pair's latest measurement by time, file order breaking ties: the last row of each pair group
    # after sorting by (pair, timestamp, row); the same over successful rows for the latest RTT.
    order = group_order(pair_i, np.asarray(train.timestamp))
    last_row = np.full(len(pair_keys), -1)
    last_row[pair_i[order]] = order  # later assignments win: the last row of each group
    last_failed = np.zeros(len(pair_keys), bool)
    last_failed[last_row >= 0] = rtt[last_row[last_row >= 0]] < 0
    ok_order = order[rtt[order] >= 0]
    last_value = np.full(len(pair_keys), np.nan)
    last_value[pair_i[ok_order]] = rtt[ok_order]
    ranks = stable_ranks(rtt)  # one value sort for every table below
    baselines = Baselines(
        global_=_table(np.zeros(n, np.int64), np.zeros(1, np.int64), rtt, ranks) if global_table else None,
        dst=_table(dst_i, dst_keys, rtt, ranks),
        pair=_table(pair_i, pair_keys, rtt, ranks),
        src_keys=src_keys,
        pair_last_value=last_value,
        pair_last_failed=last_failed,
    )
    return baselines, pair_i, ranks


def _from_table(table: _Table, rows: np.ndarray) -> tuple[Prediction, np.ndarray]:
    n = len(rows)
    nan = np.full(n, np.nan)
    if not len(table.answers):
        return Prediction(nan, nan, nan, nan.copy(), np.zeros(n, np.int64)), np.zeros(n, bool)
    r = np.maximum(rows, 0)
    ok = (rows >= 0) & table.answers[r]
    pick = lambda a: np.where(ok, a[r], np.nan)  # noqa: E731
    return Prediction(pick(table.median), pick(table.p10), pick(table.p90), pick(table.fail_share),
                      np.zeros(n, np.int64)), ok


def _fill(primary: Prediction, ok: np.ndarray, fallback: Prediction, shift: int) -> Prediction:
    """``primary`` where ``ok``, else ``fallback`` with its level moved ``shift`` levels coarser."""
    choose = lambda a, b: np.where(ok, a, b)  # noqa: E731
    return Prediction(
        choose(primary.value, fallback.value),
        choose(primary.low, fallback.low),
        choose(primary.high, fallback.high),
        choose(primary.fail_prob, fallback.fail_prob),
        np.where(ok, primary.level, fallback.level + shift),
    )


def predict(baselines: Baselines, name: str, src, dst) -> Prediction:
    """Baseline ``name``'s predictions for measurements with these sources and destinations ((n,) each)."""
    if name not in NAMES:
        raise ValueError(f"unknown baseline {name!r}; baselines: {', '.join(NAMES)}")
    src, dst = _keys(src), _keys(dst)
    n = len(src)
    glob, _ = _from_table(baselines.global_, np.zeros(n, np.int64))
    glob = dataclasses.replace(glob, level=np.full(n, LEVELS.index("global_median")))
    if name == "global_median":
        return dataclasses.replace(glob, level=np.zeros(n, np.int64))
    dst_row = _find(baselines.dst.keys, dst)
    dst_pred, dst_ok = _from_table(baselines.dst, dst_row)
    by_dst = _fill(dst_pred, dst_ok, glob, 0)
    if name == "dst_median":
        # The destination answers itself (level "own"); only the global fallback is a fallback.
        return by_dst
    # For the pair baselines the destination median is the first fallback.
    by_dst_fallback = dataclasses.replace(by_dst, level=np.where(dst_ok, 1, 2))
    src_row = _find(baselines.src_keys, src)
    code = src_row * max(len(baselines.dst.keys), 1) + dst_row
    pair_row = np.where((src_row >= 0) & (dst_row >= 0), _find(baselines.pair.keys, code), -1)
    if name == "pair_median":
        pair_pred, pair_ok = _from_table(baselines.pair, pair_row)
        return _fill(pair_pred, pair_ok, by_dst_fallback, 0)
    r = np.maximum(pair_row, 0)
    value = np.where(pair_row >= 0, baselines.pair_last_value[r] if len(r) and len(baselines.pair.keys) else np.nan,
                     np.nan)
    ok = np.isfinite(value)
    failed = np.where(pair_row >= 0, baselines.pair_last_failed[r] if len(baselines.pair.keys) else False, False)
    nan = np.full(n, np.nan)
    last = Prediction(value, nan, nan, failed.astype(np.float64), np.zeros(n, np.int64))
    out = _fill(last, ok, by_dst_fallback, 0)
    return dataclasses.replace(out, low=nan, high=nan.copy())  # a point prediction: no interval


def context_last(values: np.ndarray, failed: np.ndarray, fallback: Prediction) -> Prediction:
    """The ``context_last`` predictor: the pair's latest successful RTT earlier in the same record.

    ``values`` (n,) holds that RTT (NaN where the record's context has none) and ``failed`` (n,) whether
    the pair's latest earlier measurement failed; ``fallback`` (a train baseline) answers where there is no
    earlier RTT, its level shifted one coarser. Not a train baseline: it sees what the model sees.
    """
    n = len(values)
    ok = np.isfinite(values)
    nan = np.full(n, np.nan)
    own = Prediction(np.asarray(values, np.float64), nan, nan, np.asarray(failed, np.float64), np.zeros(n, np.int64))
    shifted = dataclasses.replace(fallback, level=np.minimum(fallback.level + 1, len(LEVELS) - 1))
    out = _fill(own, ok, shifted, 0)
    return dataclasses.replace(out, low=nan, high=nan.copy())


CONTEXT_NAMES = ("context_last", "pair_mean_last3", "pair_ewma")
EWMA_ALPHA = 0.3  # weight of the newest RTT in pair_ewma; fixed a priori (not tuned on any split)


@dataclasses.dataclass(frozen=True)
class PairContext:
    """For each measurement of a block of whole records, its pair's earlier measurements in the record."""

    last: np.ndarray  # (n,) the latest earlier successful RTT; NaN if none
    last_failed: np.ndarray  # (n,) float: the pair's immediately preceding measurement failed
    mean_last3: np.ndarray  # (n,) mean of the (up to) three latest earlier successful RTTs; NaN if none
    ewma: np.ndarray  # (n,) exponential moving average of every earlier successful RTT, oldest first


def pair_context(record, src, dst, rtt, *, alpha: float = EWMA_ALPHA) -> PairContext:
    """:class:`PairContext` for measurements given in file order ((n,) each; whole records only).

    Vectorized: the measurements are sorted by (record, src, dst, position), so a pair's earlier
    measurements in its record are the rows just before it in the same group; the k-th latest earlier
    success is found from a running count of successes, for k up to the longest group (a record holds at
    most ``seq_len / 45`` measurements), never per row. ``pair_ewma`` is ``e = x_1``, then
    ``e = alpha * x + (1 - alpha) * e`` over the earlier successes in order.
    """
    rtt = np.asarray(rtt, np.float64)
    n = len(rtt)
    nan = np.full(n, np.nan)
    if n == 0:
        return PairContext(nan, np.zeros(0), nan.copy(), nan.copy())
    order = np.lexsort((np.arange(n), _keys(dst), _keys(src), np.asarray(record)))  # (n,) sorted position -> row
    s_rec, s_src, s_dst = np.asarray(record)[order], _keys(src)[order], _keys(dst)[order]
    new_group = np.ones(n, bool)
    new_group[1:] = (s_rec[1:] != s_rec[:-1]) | (s_src[1:] != s_src[:-1]) | (s_dst[1:] != s_dst[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))  # (n,) first row of the group
    x = rtt[order]
    ok = x >= 0
    before = np.concatenate([[0], np.cumsum(ok)])  # before[p]: successes in sorted rows [0, p)
    count = before[:n] - before[group_start]  # earlier successes of the same group
    success_rows = np.flatnonzero(ok)  # sorted rows holding successes, in order

    def kth_latest(k: int) -> np.ndarray:  # the k-th latest earlier success (NaN where fewer than k)
        has = count >= k
        return np.where(has, x[success_rows[np.maximum(before[:n] - k, 0)]] if len(success_rows) else np.nan, np.nan)

    last = kth_latest(1)
    failed = np.zeros(n)
    failed[1:] = np.where(new_group[1:], 0.0, (x[:-1] < 0).astype(np.float64))
    recent = np.stack([kth_latest(k) for k in (1, 2, 3)])  # (3, n)
    mean3 = np.where(count > 0, np.nansum(recent, axis=0) / np.maximum(np.minimum(count, 3), 1), np.nan)
    # EWMA written out as weights: the k-th latest of c successes weighs alpha (1 - alpha)^(k-1), except
    # the oldest (k = c), which weighs (1 - alpha)^(c-1).
    ewma = np.zeros(n)
    for k in range(1, int(count.max()) + 1 if n else 1):
        has = count >= k
        weight = np.where(count == k, (1 - alpha) ** (k - 1), alpha * (1 - alpha) ** (k - 1))
        ewma += np.where(has, weight * np.nan_to_num(kth_latest(k)), 0.0)
    ewma = np.where(count > 0, ewma, np.nan)
    out = [np.empty(n) for _ in range(4)]
    for dest, value in zip(out, (last, failed, mean3, ewma)):
        dest[order] = value
    return PairContext(*out)


def context_predictions(ctx: PairContext, fallback: Prediction) -> dict[str, Prediction]:
    """``context_last``, ``pair_mean_last3`` and ``pair_ewma`` from :func:`pair_context`, each falling back
    to ``fallback`` (a train baseline) one level coarser where the pair has no earlier successful RTT."""
    return {name: context_last(values, ctx.last_failed, fallback)
            for name, values in zip(CONTEXT_NAMES, (ctx.last, ctx.mean_last3, ctx.ewma))}


def summarize_samples(rtt_samples: np.ndarray) -> Prediction:
    """The model's prediction from sampled RTTs (n, samples): median, 10th and 90th percentiles of the
    successful (finite, >= 0) samples, and the share of failed (< 0) samples as the failure probability.

    NaN or infinite samples (possible: the model samples raw float64 bytes) count as neither; a
    measurement whose samples are all failures or invalid gets no RTT prediction (NaN).
    """
    x = np.asarray(rtt_samples, dtype=np.float64)
    ok = np.isfinite(x) & (x >= 0)
    masked = np.where(ok, x, np.nan)
    n = len(x)
    value, low, high = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    has = ok.any(axis=1)
    if has.any():
        value[has] = np.nanmedian(masked[has], axis=1)
        low[has], high[has] = np.nanquantile(masked[has], [0.1, 0.9], axis=1)
    fail = (np.isfinite(x) & (x < 0)).mean(axis=1) if x.shape[1] else np.full(n, np.nan)
    return Prediction(value, low, high, fail, np.zeros(n, np.int64))


def metrics(true_rtt: np.ndarray, pred: Prediction) -> dict:
    """Compare predictions with the true RTTs (n,).

    * ``median_abs_error_ms``, ``mean_abs_error_ms``, ``median_abs_log_ratio`` (natural log; predictions
      raised to ``LOG_FLOOR_MS``) over *scored* measurements: true RTT > 0 and an RTT prediction (>= 0).
      Measurements the predictor gives no RTT for (all its samples failed) are counted in
      ``unscored_successes``, not guessed.
    * ``failure_accuracy`` over all measurements: (failure probability > 0.5) == (true RTT < 0).
    * ``calibration_10_90``: share of scored true RTTs inside [p10, p90] (None for point predictions).
    * ``fallback``: share of measurements answered by each coarser level (baselines only).
    """
    true_rtt = np.asarray(true_rtt, dtype=np.float64)
    success = true_rtt > 0
    scored = success & np.isfinite(pred.value) & (pred.value >= 0)
    err = np.abs(pred.value[scored] - true_rtt[scored])
    log_ratio = np.abs(np.log(np.maximum(pred.value[scored], LOG_FLOOR_MS) / true_rtt[scored]))
    interval = scored & np.isfinite(pred.low) & np.isfinite(pred.high)
    inside = (pred.low[interval] <= true_rtt[interval]) & (true_rtt[interval] <= pred.high[interval])
    predicted_fail = np.nan_to_num(pred.fail_prob, nan=0.0) > 0.5
    n = len(true_rtt)
    return {
        "measurements": int(n),
        "true_failures": int((true_rtt < 0).sum()),
        "scored": int(scored.sum()),
        "unscored_successes": int((success & ~scored).sum()),
        "median_abs_error_ms": float(np.median(err)) if len(err) else None,
        "mean_abs_error_ms": float(np.mean(err)) if len(err) else None,
        "median_abs_log_ratio": float(np.median(log_ratio)) if len(err) else None,
        "failure_accuracy": float(np.mean(predicted_fail == (true_rtt < 0))) if n else None,
        "predicted_failures": int(predicted_fail.sum()),
        "calibration_10_90": float(np.mean(inside)) if interval.any() else None,
        "fallback": {LEVELS[i]: float(np.mean(pred.level == i)) for i in (1, 2)} if n else {},
    }


def compare(true_rtt: np.ndarray, a: Prediction, b: Prediction, *, seed: int = 0, resamples: int = 1000) -> dict:
    """Paired comparison of two predictors' absolute errors on the measurements both score.

    ``median_abs_error_diff_ms`` is a's median absolute error minus b's (negative: a is better), with a
    95% bootstrap interval (``resamples`` resamples of the measurements, seeded); ``a_better_share`` is
    the share of measurements where a's error is smaller (ties count half). Sample sizes of a few
    hundred leave differences of a few ms within noise; this says how much.
    """
    true_rtt = np.asarray(true_rtt, dtype=np.float64)
    both = (true_rtt > 0) & np.isfinite(a.value) & (a.value >= 0) & np.isfinite(b.value) & (b.value >= 0)
    ea, eb = np.abs(a.value[both] - true_rtt[both]), np.abs(b.value[both] - true_rtt[both])
    n = len(ea)
    if n == 0:
        return {"measurements": 0, "median_abs_error_diff_ms": None, "ci95": None, "a_better_share": None}
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (resamples, n)
    diffs = np.median(ea[idx], axis=1) - np.median(eb[idx], axis=1)  # (resamples,)
    return {
        "measurements": int(n),
        "median_abs_error_diff_ms": float(np.median(ea) - np.median(eb)),
        "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
        "a_better_share": float(np.mean(ea < eb) + 0.5 * np.mean(ea == eb)),
    }
