"""RTT forecasts as distributions: scores (interval coverage, pinball loss, likelihood, reliability) and the
probabilistic baselines the model's distribution is compared with.

A forecast is a set of quantiles per measurement (:class:`QuantileForecast`, levels :data:`LEVELS`): the
model's come from the exact descent (:mod:`trainer.eval.quantiles`), or from its samples; the baselines'
from the train split (:func:`train_forecasts`):

* ``dst_quantiles``: the empirical quantiles of the destination's successful train RTTs (numpy's linear
  interpolation, as ``trainer.eval.baselines`` computes its percentiles), falling back to the global ones
  for a destination without any;
* ``pair_quantiles``: the same per (source, destination) pair, falling back to the destination's;
* ``<context baseline>_residual`` for ``context_last``, ``pair_mean_last3`` and ``pair_ewma``: the baseline's
  point prediction times the train quantiles of its multiplicative residual ``true / predicted`` (computed
  the same way, from each train pair's earlier RTTs in its record), where the record gives the pair an
  earlier RTT; the destination's quantiles where it does not.

The residual and global quantiles come from every ``k``-th train measurement, ``k`` chosen so that at most
:data:`SAMPLE_ROWS` measurements are read into them (all of them below that); the destination and pair
quantiles from every train measurement of the evaluated destinations.

Scores (:func:`scores`) are over *scored* measurements: true RTT > 0 and a finite forecast.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from trainer.eval import baselines as bl
from trainer.eval import columns

LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)  # the quantile levels every forecast gives
INTERVALS = (0.5, 0.8, 0.9)  # central intervals scored: (0.25, 0.75), (0.1, 0.9), (0.05, 0.95)
PINBALL_LEVELS = (0.1, 0.5, 0.9)
PIT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)  # the reliability curve from the PIT
SAMPLE_ROWS = 1_000_000  # at most this many train measurements feed the global and residual quantiles
RESIDUAL = "_residual"
BASELINES = ("dst_quantiles", "pair_quantiles", *(name + RESIDUAL for name in bl.CONTEXT_NAMES))


@dataclasses.dataclass(frozen=True)
class QuantileForecast:
    """Quantiles of the RTT given success for n measurements; NaN where a predictor has none."""

    levels: tuple[float, ...]
    values: np.ndarray  # (n, L) ms, non-decreasing along L
    own: np.ndarray | None = None  # (n,) bool: answered by the predictor itself, not its fallback
    log_likelihood: np.ndarray | None = None  # (n,) ln P(true outcome) (the model only)
    pit: np.ndarray | None = None  # (n,) mid PIT of a successful true RTT (the model only)

    def at(self, q: float) -> np.ndarray:
        """(n,) the quantile of level ``q``."""
        return self.values[:, self.levels.index(q)]

    def take(self, index) -> QuantileForecast:
        """The forecasts at ``index`` (an integer or boolean array)."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return QuantileForecast(self.levels, self.values[index], pick(self.own), pick(self.log_likelihood),
                                pick(self.pit))

    @staticmethod
    def from_samples(rtt_samples: np.ndarray, levels=LEVELS) -> QuantileForecast:
        """The samples' empirical quantiles (of the finite, >= 0 ones; NaN where there are none)."""
        x = np.asarray(rtt_samples, np.float64)
        ok = np.isfinite(x) & (x >= 0)
        values = np.full((len(x), len(levels)), np.nan)
        has = ok.any(axis=1)
        if has.any():
            values[has] = np.nanquantile(np.where(ok, x, np.nan)[has], levels, axis=1).T
        return QuantileForecast(tuple(levels), values)


def pinball(true: np.ndarray, pred: np.ndarray, q: float) -> np.ndarray:
    """(n,) the pinball (quantile) loss of predicting ``pred`` as the ``q``-quantile of ``true``."""
    d = true - pred
    return np.maximum(q * d, (q - 1.0) * d)


def _scored(true: np.ndarray, forecast: QuantileForecast) -> np.ndarray:
    return (true > 0) & np.all(np.isfinite(forecast.values), axis=1)


def _losses(true: np.ndarray, forecast: QuantileForecast) -> np.ndarray:
    """(n,) the mean pinball loss over :data:`PINBALL_LEVELS` of every measurement."""
    return np.mean([pinball(true, forecast.at(q), q) for q in PINBALL_LEVELS], axis=0)


def scores(true_rtt: np.ndarray, forecast: QuantileForecast) -> dict:
    """Coverage of the central intervals, pinball losses, and for the model its likelihood and PIT
    reliability, of ``forecast`` against the true RTTs (n,)."""
    true = np.asarray(true_rtt, np.float64)
    ok = _scored(true, forecast)
    t = true[ok]
    out: dict = {"measurements": int(len(true)), "scored": int(ok.sum())}
    if forecast.own is not None and len(true):
        out["answered_own"] = float(np.mean(forecast.own))
    cover = {}
    for level in INTERVALS:
        lo, hi = forecast.at(round((1 - level) / 2, 6))[ok], forecast.at(round((1 + level) / 2, 6))[ok]
        cover[f"{level:g}"] = float(np.mean((t >= lo) & (t <= hi))) if len(t) else None
    out["coverage"] = cover
    out["pinball_ms"] = {f"{q:g}": float(np.mean(pinball(t, forecast.at(q)[ok], q))) if len(t) else None
                         for q in PINBALL_LEVELS}
    out["pinball_mean_ms"] = float(np.mean(_losses(t, forecast.take(ok)))) if len(t) else None
    if forecast.log_likelihood is not None:
        ll = forecast.log_likelihood
        success = true >= 0
        out["nll_bits"] = float(-np.mean(ll) / math.log(2)) if len(ll) else None
        out["nll_bits_success"] = float(-np.mean(ll[success]) / math.log(2)) if success.any() else None
        out["nll_bits_failure"] = float(-np.mean(ll[~success]) / math.log(2)) if (~success).any() else None
    if forecast.pit is not None:
        pit = forecast.pit[ok & np.isfinite(forecast.pit)]
        out["pit_reliability"] = {f"{level:g}": float(np.mean(np.abs(pit - 0.5) <= level / 2)) if len(pit) else None
                                  for level in PIT_LEVELS}
    return out


def compare(true_rtt: np.ndarray, a: QuantileForecast, b: QuantileForecast, *, seed: int = 0,
            resamples: int = 1000) -> dict:
    """a's mean pinball loss (over :data:`PINBALL_LEVELS`) minus b's on the measurements both score, with a
    95% bootstrap interval (``resamples`` resamples of the measurements, seeded; negative: a is better)."""
    true = np.asarray(true_rtt, np.float64)
    both = _scored(true, a) & _scored(true, b)
    diff = _losses(true[both], a.take(both)) - _losses(true[both], b.take(both))  # (n,)
    n = len(diff)
    if n == 0:
        return {"measurements": 0, "pinball_mean_diff_ms": None, "ci95": None}
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // n)  # resamples at a time: bounded memory whatever n
    for lo in range(0, resamples, chunk):
        k = min(chunk, resamples - lo)
        means[lo : lo + k] = diff[rng.integers(0, n, size=(k, n))].mean(axis=1)  # (k,)
    return {"measurements": int(n), "pinball_mean_diff_ms": float(diff.mean()),
            "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]}


# ----------------------------------------------------------------------------------------------------------
# Probabilistic baselines from the train split


def _group(keys: np.ndarray, values: np.ndarray, levels) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``keys`` (sorted) and their quantiles ((groups, L)) of ``values``."""
    uniq, index = np.unique(keys, return_inverse=True)
    qs = bl.group_quantiles(index.reshape(-1), values, len(uniq), qs=levels)
    return uniq, np.stack(qs, axis=1) if len(uniq) else np.zeros((0, len(levels)))


def _lookup(uniq: np.ndarray, table: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    row = bl._find(uniq, queries)
    values = np.full((len(queries), table.shape[1]), np.nan)
    values[row >= 0] = table[row[row >= 0]]
    return values, row >= 0


def train_forecasts(dataset, split: str, addresses: columns.Addresses, picked: columns.Columns,
                    point: dict[str, bl.Prediction], *, levels=LEVELS, sample_rows: int = SAMPLE_ROWS,
                    block_records: int = 4096) -> dict[str, QuantileForecast]:
    """The probabilistic baselines (:data:`BASELINES`, see the module docstring) for the measurements
    ``picked``, from one pass over ``split`` (the train split, read block by block with ``addresses``, the
    evaluation's address ids). ``point`` holds the context baselines' predictions for ``picked`` (from
    ``trainer.eval.scoring.score_split``): their value where they answer themselves (level 0)."""
    levels = tuple(levels)
    total = int(dataset.manifest["splits"][split]["measurements"])
    stride = max(1, -(-total // max(sample_rows, 1)))
    want = np.unique(picked.dst)
    src, dst, rtt, glob = [], [], [], []
    resid = {name: [] for name in bl.CONTEXT_NAMES}
    seen = 0
    for _, cols in columns.iter_split(dataset, split, addresses, block_records=block_records):
        ok = cols.rtt >= 0
        keep = ok & np.isin(cols.dst, want)
        src.append(cols.src[keep])
        dst.append(cols.dst[keep])
        rtt.append(cols.rtt[keep])
        sampled = (seen + np.arange(len(cols))) % stride == 0
        glob.append(cols.rtt[sampled & ok])
        ctx = bl.pair_context(cols.record, cols.src, cols.dst, cols.rtt)
        for name, value in zip(bl.CONTEXT_NAMES, (ctx.last, ctx.mean_last3, ctx.ewma)):
            m = sampled & (cols.rtt > 0) & np.isfinite(value)
            resid[name].append(np.log(cols.rtt[m] / np.maximum(value[m], bl.LOG_FLOOR_MS)))
        seen += len(cols)
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    src, dst, rtt, glob = cat(src, np.int64), cat(dst, np.int64), cat(rtt, np.float64), cat(glob, np.float64)
    n = len(picked)
    global_q = np.quantile(glob, levels) if len(glob) else np.full(len(levels), np.nan)

    d_uniq, d_table = _group(dst, rtt, levels)
    d_values, d_own = _lookup(d_uniq, d_table, picked.dst)
    d_values[~d_own] = global_q
    out = {"dst_quantiles": QuantileForecast(levels, d_values, d_own)}

    ids = max(len(addresses), 1)
    p_uniq, p_table = _group(src * ids + dst, rtt, levels)
    p_values, p_own = _lookup(p_uniq, p_table, picked.src * ids + picked.dst)
    out["pair_quantiles"] = QuantileForecast(levels, np.where(p_own[:, None], p_values, d_values), p_own)

    for name in bl.CONTEXT_NAMES:
        r = cat(resid[name], np.float64)
        factor = np.exp(np.quantile(r, levels)) if len(r) else np.full(len(levels), np.nan)
        pred = point[name]
        own = (np.asarray(pred.level) == 0) & np.isfinite(pred.value) if n else np.zeros(0, bool)
        values = np.where(own[:, None], np.maximum(pred.value, 0.0)[:, None] * factor[None, :], d_values)
        out[name + RESIDUAL] = QuantileForecast(levels, values, own)
    return out


# ----------------------------------------------------------------------------------------------------------
# The report's section


def report_section(true_rtt: np.ndarray, model: QuantileForecast, baselines: dict[str, QuantileForecast], *,
                   sampled: QuantileForecast | None = None, seed: int = 0) -> dict:
    """``report["rtt"]["distribution"]``: every forecast's :func:`scores`, and the model's paired pinball
    comparison with each baseline (and with its own samples' quantiles, when given)."""
    out = {"levels": list(model.levels), "model": scores(true_rtt, model)}
    if sampled is not None:
        out["model_sampled"] = scores(true_rtt, sampled)
    out["baselines"] = {name: scores(true_rtt, f) for name, f in baselines.items()}
    vs = {name: compare(true_rtt, model, f, seed=seed) for name, f in baselines.items()}
    if sampled is not None:
        vs["model_sampled"] = compare(true_rtt, model, sampled, seed=seed)
    out["model"]["vs"] = vs
    return out


def _fmt(value, spec: str) -> str:
    """``value`` in ``spec``, or in 4 significant digits when it is huge (an undertrained model's v1 quantiles
    reach 1e300 ms, which fixed-point would spell in 300 digits); "-" for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if spec.endswith("f") and abs(value) >= 1e7:
        return format(value, "+.3e" if spec.startswith("+") else ".3e")
    return format(value, spec)


def table_rows(section: dict) -> tuple[list[str], list[list[str]]]:
    """The distribution table: a header and one row per forecast (the model first)."""
    header = ["predictor", "coverage 50%", "coverage 80%", "coverage 90%", "pinball 0.1 (ms)",
              "pinball 0.5 (ms)", "pinball 0.9 (ms)", "mean pinball (ms)", "model minus this, 95% CI (ms)",
              "NLL (bits)", "scored", "answered itself"]
    rows = []
    named = [("model (descent)", section["model"])]
    if "model_sampled" in section:
        named.append(("model (samples)", section["model_sampled"]))
    named += list(section["baselines"].items())
    vs = section["model"].get("vs", {})
    for name, s in named:
        key = "model_sampled" if name == "model (samples)" else name
        paired = "-"
        if key in vs and vs[key]["ci95"] is not None:
            c = vs[key]
            paired = (f"{_fmt(c['pinball_mean_diff_ms'], '+.2f')} [{_fmt(c['ci95'][0], '+.2f')}, "
                      f"{_fmt(c['ci95'][1], '+.2f')}]")
        rows.append([
            name, *(_fmt(s["coverage"][f"{lv:g}"], ".3f") for lv in INTERVALS),
            *(_fmt(s["pinball_ms"][f"{q:g}"], ".2f") for q in PINBALL_LEVELS), _fmt(s["pinball_mean_ms"], ".2f"),
            paired, _fmt(s.get("nll_bits"), ".2f"), f"{s['scored']:,}", _fmt(s.get("answered_own"), ".1%"),
        ])
    return header, rows


def render_markdown(section: dict) -> str:
    """The report.md section: the distribution table and what it means."""
    header, rows = table_rows(section)
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(f"**{c}**" if i == 0 and r[0].startswith("model") else c for i, c in enumerate(r))
              + " |" for r in rows]
    return "\n".join([
        *lines,
        "",
        "Coverage: the share of scored true RTTs inside the forecast's central 50%, 80% and 90% intervals "
        "(calibrated: 0.5, 0.8, 0.9). Pinball: the quantile loss of the 0.1, 0.5 and 0.9 quantiles (lower is "
        "better); the paired column is the model's mean pinball loss minus the predictor's on the measurements "
        "both score, with a 95% bootstrap interval. NLL: the model's negative log-likelihood of each true "
        "outcome (the exact RTT tokens of a success, the failure itself for a failed ping), in bits per "
        "measurement. Baselines fall back (destination, then global quantiles) where they cannot answer; the "
        "last column says how often they did not.",
    ])


def plot_reliability(section: dict, path: str) -> None:
    """Nominal vs observed coverage: the central intervals of every forecast, and the model's PIT curve."""
    # matplotlib imported here: 0.4 s of CPU at start-up that trainer.eval.compare (no plot) never needs, and
    # the Agg backend has to be chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="calibrated")
    pit = section["model"].get("pit_reliability")
    if pit:
        xs = [float(k) for k in pit]
        ys = [pit[k] if pit[k] is not None else np.nan for k in pit]
        ax.plot(xs, ys, "-", color="C0", lw=1.5, label="model: central intervals from its PIT")
    named = [("model (descent)", section["model"])]
    if "model_sampled" in section:
        named.append(("model (samples)", section["model_sampled"]))
    named += list(section["baselines"].items())
    for i, (name, s) in enumerate(named):
        ys = [s["coverage"][f"{lv:g}"] for lv in INTERVALS]
        ys = [np.nan if y is None else y for y in ys]
        ax.plot(INTERVALS, ys, "o" if i == 0 else "s", ms=7 if i == 0 else 5, color=f"C{i}", alpha=0.85,
                label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("observed coverage")
    ax.set_title("RTT forecast reliability")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
