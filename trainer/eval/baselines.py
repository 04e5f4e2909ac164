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


@dataclasses.dataclass(frozen=True)
class _Table:
    """Per-key statistics of successful RTTs; key -> row."""

    index: dict
    median: np.ndarray
    p10: np.ndarray
    p90: np.ndarray
    fail_share: np.ndarray
    answers: np.ndarray  # bool: the key has at least one successful RTT


def _table(keys: list, rtt: np.ndarray) -> _Table:
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    m = len(groups)
    median, p10, p90 = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
    fail_share, answers = np.zeros(m), np.zeros(m, bool)
    for row, rows in enumerate(groups.values()):
        values = rtt[rows]
        ok = values[values >= 0]
        fail_share[row] = np.mean(values < 0)
        if len(ok):
            answers[row] = True
            median[row] = np.median(ok)
            p10[row], p90[row] = np.quantile(ok, [0.1, 0.9])
    return _Table({k: i for i, k in enumerate(groups)}, median, p10, p90, fail_share, answers)


@dataclasses.dataclass(frozen=True)
class Baselines:
    """Statistics of the train split that the baselines answer from (see :func:`fit`)."""

    global_: _Table
    dst: _Table
    pair: _Table
    pair_last_value: dict  # (src, dst) -> latest successful RTT
    pair_last_failed: dict  # (src, dst) -> whether the latest measurement failed


def fit(train: Observations) -> Baselines:
    """Fit every baseline on the train measurements."""
    rtt = np.asarray(train.rtt, dtype=np.float64)
    src, dst = list(train.src), list(train.dst)
    pairs = list(zip(src, dst))
    order = np.lexsort((np.arange(len(rtt)), np.asarray(train.timestamp)))  # by time, then file order
    last_value, last_failed = {}, {}
    for i in order:  # later rows overwrite earlier ones
        last_failed[pairs[i]] = bool(rtt[i] < 0)
        if rtt[i] >= 0:
            last_value[pairs[i]] = float(rtt[i])
    return Baselines(
        global_=_table([None] * len(rtt), rtt),
        dst=_table(dst, rtt),
        pair=_table(pairs, rtt),
        pair_last_value=last_value,
        pair_last_failed=last_failed,
    )


def _lookup(table: _Table, keys: list) -> tuple[np.ndarray, np.ndarray]:
    """(n,) row of each key in ``table`` and whether that row can answer."""
    rows = np.array([table.index.get(k, -1) for k in keys], dtype=np.int64)
    ok = (rows >= 0) & table.answers[np.maximum(rows, 0)] if len(table.answers) else np.zeros(len(rows), bool)
    return rows, ok


def _from_table(table: _Table, keys: list) -> tuple[Prediction, np.ndarray]:
    rows, ok = _lookup(table, keys)
    r = np.maximum(rows, 0)
    nan = np.full(len(keys), np.nan)
    if not len(table.answers):
        return Prediction(nan, nan, nan, nan.copy(), np.zeros(len(keys), np.int64)), ok
    pick = lambda a: np.where(ok, a[r], np.nan)  # noqa: E731
    level = np.zeros(len(keys), np.int64)
    return Prediction(pick(table.median), pick(table.p10), pick(table.p90), pick(table.fail_share), level), ok


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
    src, dst = list(src), list(dst)
    n = len(src)
    if name not in NAMES:
        raise ValueError(f"unknown baseline {name!r}; baselines: {', '.join(NAMES)}")
    glob, _ = _from_table(baselines.global_, [None] * n)
    glob = dataclasses.replace(glob, level=np.full(n, LEVELS.index("global_median")))
    if name == "global_median":
        return dataclasses.replace(glob, level=np.zeros(n, np.int64))
    dst_pred, dst_ok = _from_table(baselines.dst, dst)
    by_dst = _fill(dst_pred, dst_ok, glob, 0)
    if name == "dst_median":
        # The destination answers itself (level "own"); only the global fallback is a fallback.
        return by_dst
    # For the pair baselines the destination median is the first fallback.
    by_dst_fallback = dataclasses.replace(by_dst, level=np.where(dst_ok, 1, 2))
    pairs = list(zip(src, dst))
    if name == "pair_median":
        pair_pred, pair_ok = _from_table(baselines.pair, pairs)
        return _fill(pair_pred, pair_ok, by_dst_fallback, 0)
    value = np.array([baselines.pair_last_value.get(p, np.nan) for p in pairs])
    ok = np.isfinite(value)
    failed = np.array([float(baselines.pair_last_failed.get(p, False)) for p in pairs])
    nan = np.full(n, np.nan)
    last = Prediction(value, nan, nan, failed, np.zeros(n, np.int64))
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
