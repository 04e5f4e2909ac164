"""Pair two evaluations of the same rows, measurement by measurement.

Usage::

    python -m trainer.eval.compare REPORT_A REPORT_B [--names v1,v2] [--predictor model] [--output FILE.md]

``REPORT_A`` and ``REPORT_B`` are ``trainer.evaluate --output`` directories, typically of two models
trained the same way on two datasets of one input (a v1 and a v2 dataset), evaluated with ``--choose_by row``
so that both scored the same rows. Their ``predictions.csv`` are joined on (source, destination, time); a
key that occurs more than once on either side is left out (counted), as it cannot be paired. The true RTT
is A's: put the dataset that keeps it exactly (v1) first. Both sides must agree on every paired row's
outcome (success or failure) and on its RTT within :data:`RTT_TOLERANCE` (v2 keeps the RTT within 0.1%);
otherwise they are not evaluations of the same rows, and the comparison stops with exit 2.

The output (Markdown, printed and written to ``--output`` if given) holds, on the paired measurements:
each side's median absolute error, central 80% interval coverage and mean pinball loss at 0.1/0.5/0.9 for
``--predictor`` (the model by default), the baselines ``dst_median`` and ``context_last`` of A (the
baselines read the same rows on both sides), the differences A minus B with 95% bootstrap intervals, and
from each report the NLL per measurement (all tokens, and the RTT's) and the measurements per record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pyarrow.csv as pacsv

from beam_pipelines.common import errors
from beam_pipelines.common.cli import StrictArgumentParser, parse_options
from beam_pipelines.common.errors import InputError, UsageError
from beam_pipelines.common.files import atomic_path
from trainer.eval import baselines as bl
from trainer.eval import probabilistic as pr

RTT_TOLERANCE = 1e-3  # relative; the coarsest scheme (v2) keeps the RTT within 0.1%
KEY = ("src_addr", "dst_addr", "event_time")
BASELINES = ("dst_median", "context_last")
LEVELS = (0.1, 0.5, 0.9)  # the quantiles predictions.csv holds for each predictor (p10, median, p90)


class Side:
    """One evaluation: its predictions.csv as numpy columns and its report.json."""

    def __init__(self, report_dir: str):
        self.dir = report_dir
        csv_path, json_path = os.path.join(report_dir, "predictions.csv"), os.path.join(report_dir, "report.json")
        for path in (csv_path, json_path):
            if not os.path.exists(path):
                raise InputError(f"{path}: not found (is {report_dir} a trainer.evaluate --output directory?)")
        table = pacsv.read_csv(csv_path)
        missing = [k for k in (*KEY, "true_rtt") if k not in table.column_names]
        if missing:
            raise InputError(f"{csv_path}: no column {', '.join(missing)} (written by an older trainer.evaluate? "
                             f"evaluate again)")
        self.columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        with open(json_path) as f:
            self.report = json.load(f)

    def prediction(self, name: str, index: np.ndarray) -> bl.Prediction:
        """``name``'s predictions at ``index``: value, 10-90% interval, failure probability."""
        if f"{name}_rtt" not in self.columns:
            raise InputError(f"{self.dir}/predictions.csv: no predictor {name!r}")

        def col(suffix):
            return np.asarray(self.columns[f"{name}_{suffix}"], np.float64)[index]

        return bl.Prediction(col("rtt"), col("p10"), col("p90"), col("fail_prob"), np.zeros(len(index), np.int64))

    def keys(self) -> np.ndarray:
        cols = self.columns
        return np.array([f"{s}|{d}|{t}" for s, d, t in zip(cols["src_addr"].tolist(), cols["dst_addr"].tolist(),
                                                            cols["event_time"].tolist())], dtype=object)


def _unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Keys that occur once, their rows, and how many rows were dropped as repeated."""
    uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
    once = counts == 1
    return uniq[once], first[once], int(counts[~once].sum())


def pair(a: Side, b: Side) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows of a and of b that are the same measurement, in a's order, and the counts of what was left out."""
    ka, ia, dup_a = _unique(a.keys())
    kb, ib, dup_b = _unique(b.keys())
    common, at_a, at_b = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    order = np.argsort(ia[at_a], kind="stable")
    rows_a, rows_b = ia[at_a][order], ib[at_b][order]
    ta = np.asarray(a.columns["true_rtt"], np.float64)[rows_a]
    tb = np.asarray(b.columns["true_rtt"], np.float64)[rows_b]
    fail_a, fail_b = ~(ta >= 0), ~(tb >= 0)
    ok = fail_a == fail_b
    ok[~fail_a] &= np.abs(tb[~fail_a] - ta[~fail_a]) <= RTT_TOLERANCE * ta[~fail_a] + 1e-9
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(
            f"{a.dir} and {b.dir} disagree on {int((~ok).sum())} of {len(ok)} paired measurements (first: "
            f"{common[order][i]}: true RTT {ta[i]} against {tb[i]}); they are not evaluations of the same rows")
    counts = {"a_rows": len(a.columns["true_rtt"]), "b_rows": len(b.columns["true_rtt"]), "paired": len(rows_a),
              "a_repeated": dup_a, "b_repeated": dup_b}
    return rows_a, rows_b, counts


def _forecast(p: bl.Prediction) -> pr.QuantileForecast:
    return pr.QuantileForecast(LEVELS, np.stack([p.low, p.value, p.high], axis=1))


def _coverage(true: np.ndarray, p: bl.Prediction) -> float | None:
    ok = (true > 0) & np.isfinite(p.low) & np.isfinite(p.high)
    return float(np.mean((true[ok] >= p.low[ok]) & (true[ok] <= p.high[ok]))) if ok.any() else None


def compare(a: Side, b: Side, *, names: tuple[str, str] = ("A", "B"), predictor: str = "model", seed: int = 0,
            resamples: int = 1000) -> dict:
    """The paired comparison as a dict (see the module docstring)."""
    rows_a, rows_b, counts = pair(a, b)
    true = np.asarray(a.columns["true_rtt"], np.float64)[rows_a]
    pa_, pb_ = a.prediction(predictor, rows_a), b.prediction(predictor, rows_b)
    entries = {}
    for label, p in ((f"{predictor} ({names[0]})", pa_), (f"{predictor} ({names[1]})", pb_),
                     *((f"{name} ({names[0]})", a.prediction(name, rows_a)) for name in BASELINES
                       if f"{name}_rtt" in a.columns)):
        m = bl.metrics(true, p)
        f = _forecast(p)
        scored = pr._scored(true, f)
        entries[label] = {
            "median_abs_error_ms": m["median_abs_error_ms"],
            "coverage_10_90": _coverage(true, p),
            "pinball_mean_ms": float(np.mean(pr._losses(true[scored], f.take(scored)))) if scored.any() else None,
            "vs_b": bl.compare(true, p, pb_, seed=seed, resamples=resamples),
            "pinball_vs_b": pr.compare(true, f, _forecast(pb_), seed=seed, resamples=resamples),
        }
    reports = {}
    for name, side in zip(names, (a, b)):
        nll, per_field = side.report.get("nll", {}), side.report.get("nll_per_field", {})
        reports[name] = {
            "dir": side.dir,
            "dataset_fingerprint": side.report.get("meta", {}).get("dataset_fingerprint"),
            "choose_by": side.report.get("meta", {}).get("choose_by"),
            "nll_bits_per_measurement": nll.get("bits_per_measurement"),
            "rtt_bits_per_measurement": per_field.get("rtt", {}).get("bits_per_field"),
            "measurements_per_record": (nll["measurements"] / nll["records"]) if nll.get("records") else None,
            "nll_measurements": nll.get("measurements"),
        }
    return {"names": list(names), "predictor": predictor, "counts": counts, "predictors": entries,
            "reports": reports, "seed": seed, "resamples": resamples}


def _f(x, spec=".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def render(result: dict) -> str:
    """The comparison as Markdown."""
    a, b = result["names"]
    c = result["counts"]
    lines = [
        f"# {a} against {b}, paired",
        "",
        f"{c['paired']:,} measurements paired by (source, destination, time) of {c['a_rows']:,} in {a} and "
        f"{c['b_rows']:,} in {b} (left out as repeated keys: {c['a_repeated']} and {c['b_repeated']}); the "
        f"true RTT is {a}'s. Differences are the row's predictor minus {result['predictor']} ({b}), with 95% "
        f"bootstrap intervals ({result['resamples']} resamples, seed {result['seed']}; negative: the row is better).",
        "",
        "| predictor | median abs error (ms) | minus " + f"{result['predictor']} ({b})" +
        ", 95% CI | better share | 10-90% coverage | mean pinball 0.1/0.5/0.9 (ms) | minus, 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, e in result["predictors"].items():
        vs, pin = e["vs_b"], e["pinball_vs_b"]
        own = label == f"{result['predictor']} ({b})"
        diff = "" if own else (f"{_f(vs['median_abs_error_diff_ms'])} [{_f(vs['ci95'][0])}, {_f(vs['ci95'][1])}]"
                               if vs["ci95"] else "n/a")
        pdiff = "" if own else (f"{_f(pin['pinball_mean_diff_ms'])} [{_f(pin['ci95'][0])}, {_f(pin['ci95'][1])}]"
                                if pin["ci95"] else "n/a")
        share = "" if own else _f(vs["a_better_share"], ".3f")
        lines.append(f"| {label} | {_f(e['median_abs_error_ms'])} | {diff} | {share} | "
                     f"{_f(e['coverage_10_90'], '.3f')} | {_f(e['pinball_mean_ms'])} | {pdiff} |")
    lines += ["", "| evaluation | NLL bits per measurement | of which the RTT | measurements per record | "
                  "measurements in the NLL | choose_by |", "|---|---|---|---|---|---|"]
    for name, r in result["reports"].items():
        lines.append(f"| {name} (`{r['dir']}`) | {_f(r['nll_bits_per_measurement'])} | "
                     f"{_f(r['rtt_bits_per_measurement'])} | {_f(r['measurements_per_record'], '.1f')} | "
                     f"{r['nll_measurements'] if r['nll_measurements'] is not None else 'n/a'} | {r['choose_by']} |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = StrictArgumentParser(prog="python -m trainer.eval.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("report_a", help="trainer.evaluate --output directory (its true RTTs are used)")
    p.add_argument("report_b", help="trainer.evaluate --output directory of the same rows")
    p.add_argument("--names", default="A,B", help="two labels, comma-separated (default A,B)")
    p.add_argument("--predictor", default="model", help="the predictor compared (default model)")
    p.add_argument("--seed", type=int, default=0, help="seeds the bootstrap")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--output", default=None, help="also write the Markdown here (and FILE.json beside)")
    return p


def run(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 done, 2 bad arguments or reports that are not of the same rows."""
    try:
        args = parse_options(_parser(), argv)
        names = tuple(x.strip() for x in args.names.split(","))
        if len(names) != 2 or not all(names):
            raise UsageError(f"--names takes two labels, comma-separated (got {args.names!r})")
        if args.resamples <= 0:
            raise UsageError("--resamples must be positive")
        result = compare(Side(args.report_a), Side(args.report_b), names=names, predictor=args.predictor,
                         seed=args.seed, resamples=args.resamples)
    except (UsageError, InputError) as err:
        return errors.report(err)
    text = render(result)
    print(text, end="")
    if args.output:
        with atomic_path(args.output) as tmp, open(tmp, "w") as f:
            f.write(text)
        with atomic_path(os.path.splitext(args.output)[0] + ".json") as tmp, open(tmp, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
