"""The evaluation's report files: ``report.md`` (:func:`render_markdown`), the predicted-vs-true plot,
``predictions.csv`` (:func:`write_predictions`) and ``report.html``, all written by :func:`write_report` from
the report dict and the per-measurement table that the ``trainer.evaluate`` command builds (the baselines'
part in :mod:`trainer.eval.scoring`, the model's in :mod:`trainer.eval.model_eval`)."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from beam_pipelines.common.files import atomic_path
from trainer.eval import baselines as bl
from trainer.eval import coordinates as co
from trainer.eval import html_report
from trainer.eval import probabilistic as pr
from trainer.eval.choice import choose

REPORT_JSON, REPORT_MD = "report.json", "report.md"
PLOT_PNG, PREDICTIONS_CSV = "rtt_pred_vs_true.png", "predictions.csv"
RELIABILITY_PNG, REPORT_HTML = "reliability.png", "report.html"
MODEL = "model"
MODEL_SAMPLED = "model_sampled"  # the model's figures from --samples draws, beside the descent's


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _baseline_rows(report: dict, with_model: bool) -> list[str]:
    rows = [(MODEL, report["rtt"][MODEL])] if with_model else []
    rows += list(report["rtt"]["baselines"].items())
    lines = []
    for name, r in rows:
        fb = r.get("fallback", {})
        fallback = "-" if name == MODEL else f"{fb.get('dst_median', 0):.1%} / {fb.get('global_median', 0):.1%}"
        cells = [f"**{name}**" if name == MODEL else name, _fmt(r["median_abs_error_ms"], 2)]
        if with_model:
            vs = report["rtt"][MODEL].get("vs", {}).get(name)
            paired = "-"
            if vs and vs["ci95"] is not None:
                paired = f"{vs['median_abs_error_diff_ms']:+.2f} [{vs['ci95'][0]:+.2f}, {vs['ci95'][1]:+.2f}]"
            cells.append(paired)
        cells += [_fmt(r["mean_abs_error_ms"], 2), _fmt(r["median_abs_log_ratio"]), _fmt(r["failure_accuracy"]),
                  _fmt(r["calibration_10_90"]), f"{r['scored']:,}", fallback]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


_NOTES = (
    "Baselines are fitted on the `{train}` split. `matrix_factorization` (rank {rank}, regularisation {reg}, ALS "
    "on log RTT) and `vivaldi` ({dims}-D + height) place a source unseen in train from its earlier measurements "
    "in the same record; {unseen:.1%} of the evaluated measurements have such a source. `context_last`, "
    "`pair_mean_last3` and `pair_ewma` read the pair's earlier RTTs in the same record (what the model also "
    "sees). Each falls back to `dst_median` (and that to the global median) where it cannot answer; the last "
    "column says how often."
)


def render_markdown(report: dict) -> str:
    """``report.md``: the RTT table (model, if any, and baselines) and the per-field NLL table."""
    meta = report["meta"]
    with_model = MODEL in report["rtt"]
    notes = _NOTES.format(train=meta["train_split"], rank=meta["matrix_factorization"]["rank"],
                          reg=meta["matrix_factorization"]["reg"], dims=meta["vivaldi"]["dims"],
                          unseen=meta["unseen_source_share"])
    head = ["| predictor | median abs error (ms) |"]
    if with_model:
        head.append(" model minus this, 95% CI (ms) |")
    head.append(" mean abs error (ms) | median abs log ratio | failure accuracy | calibration 10-90% | scored "
                "| fallback to dst / global |")
    header = ["".join(head), "|---" * (8 + with_model) + "|"]
    if not with_model:
        lines = [
            "# ping-llm evaluation: baselines",
            "",
            f"Split `{meta['split']}` of `{meta['data_dir']}` (fingerprint `{meta['dataset_fingerprint'][:12]}`), "
            f"{meta['evaluated_measurements']:,} of {meta['split_measurements']:,} measurements, no model.",
            "",
            *header,
            *_baseline_rows(report, False),
            "",
            notes,
            "",
            f"![predicted vs true RTT]({PLOT_PNG})",
            "",
        ]
        return "\n".join(lines)
    m = meta["model"]
    lines = [
        "# ping-llm evaluation",
        "",
        f"Checkpoint step {meta['checkpoint_step']} (model {m['num_layers']} layers x width {m['width']}, "
        f"{m['num_heads']} heads, MLP {m['mlp_dim']}; trained {meta['train_steps']} steps at batch "
        f"{meta['batch_size']}), split `{meta['split']}` of `{meta['data_dir']}` "
        f"(fingerprint `{meta['dataset_fingerprint'][:12]}`).",
        "",
        f"## RTT prediction ({meta['evaluated_measurements']} of {meta['split_measurements']} measurements, "
        f"the model's descent median"
        + (f", and {meta['samples_per_measurement']} samples each" if meta.get("samples_per_measurement") else "")
        + f", seed {meta['seed']})",
        "",
        *header,
        *_baseline_rows(report, True),
    ]
    model = report["rtt"][MODEL]
    sampled = report["rtt"].get(MODEL_SAMPLED)
    sampled_note = ""
    if sampled:
        vs = sampled["vs_descent"]
        ci = "" if vs["ci95"] is None else f" [{vs['ci95'][0]:+.2f}, {vs['ci95'][1]:+.2f}]"
        sampled_note = (
            f" From {meta['samples_per_measurement']} samples per measurement instead (the median of the "
            f"successful samples): median abs error {_fmt(sampled['median_abs_error_ms'], 2)} ms, "
            f"{_fmt(vs['median_abs_error_diff_ms'], 2)}{ci} ms against the descent's, failure accuracy "
            f"{_fmt(sampled['failure_accuracy'])}, calibration 10-90% {_fmt(sampled['calibration_10_90'])}; "
            f"{sampled['unscored_successes']} successful measurements got no successful sample and "
            f"{sampled['invalid_sample_share']:.2%} of the samples were NaN or infinite.")
    lines += [
        "",
        "Errors are over measurements whose true RTT is > 0 and that got an RTT prediction (`scored`). The "
        "model's prediction is the median of its RTT distribution given success, its 10-90% interval the 0.1 "
        "and 0.9 quantiles, and its failure probability exact, all read by descent (no sampling). "
        f"{model['true_failures']} evaluated measurements failed. " + notes + " The model column is the model's "
        "median absolute error minus the predictor's on the measurements both score (negative: the model is "
        "better), with a 95% bootstrap interval." + sampled_note,
        "",
    ]
    if "distribution" in report["rtt"]:
        lines += ["## RTT distribution", "", pr.render_markdown(report["rtt"]["distribution"]), "",
                  f"![reliability of the forecasts]({RELIABILITY_PNG})", ""]
    lines += [
        "## Per-field negative log-likelihood",
        "",
        "| field | bits per token | bits per field | tokens |",
        "|---|---|---|---|",
    ]
    for name, r in report["nll_per_field"].items():
        lines.append(f"| {name} | {r['bits_per_token']:.3f} | {r['bits_per_field']:.2f} | {r['tokens']:,} |")
    nll = report["nll"]
    if nll.get("measurements"):
        lines += [
            f"| **all** | {nll['bits_per_token']:.3f} | {nll['bits_per_measurement']:.2f} per measurement "
            f"| {nll['tokens']:,} |",
        ]
    lines += ["", f"![predicted vs true RTT]({PLOT_PNG})", ""]
    return "\n".join(lines)


def write_predictions(table: dict, path: str, *, chunk_rows: int = 1 << 17) -> None:
    """One CSV row per evaluated measurement: true RTT and every predictor's value, interval, failure
    probability and answering level; written by Arrow's CSV writer (columns, not rows), empty for none.
    Written ``chunk_rows`` measurements at a time, each predictor read for that slice only (a spilled one's
    memory maps are dropped after it), so memory does not grow with the measurements. Two threads format
    the chunks as text (Arrow releases the GIL there: a 10M-row file is 5 GB of text, most of the time), and
    the chunks are written in order, the header with the first: the same bytes as one writer would give."""
    def floats(a):
        a = np.asarray(a, np.float64)
        return pa.array(a, mask=~np.isfinite(a))

    def text(a):
        a = np.asarray(a)
        return pa.array(a.tolist() if a.dtype == object else a)

    def chunk_at(lo: int) -> pa.Table:
        part = slice(lo, min(lo + chunk_rows, n))
        cols = {
            "record": pa.array(np.asarray(table["record"][part], np.int64)),
            "start": pa.array(np.asarray(table["start"][part], np.int64)),
            "src_addr": text(table["src_addr"][part]),
            "dst_addr": text(table["dst_addr"][part]),
            "event_time": pa.array(np.asarray(table["event_time"][part], np.int64)),
            "true_rtt": floats(table["true_rtt"][part]),
        }
        for name in list(table):
            p = table[name]
            if not isinstance(p, bl.Prediction):
                continue
            p = bl.Prediction(*(np.array(getattr(p, f.name)[part]) for f in dataclasses.fields(bl.Prediction)))
            cols[f"{name}_rtt"], cols[f"{name}_p10"], cols[f"{name}_p90"] = (floats(p.value), floats(p.low),
                                                                             floats(p.high))
            cols[f"{name}_fail_prob"] = floats(p.fail_prob)
            cols[f"{name}_level"] = levels.take(pa.array(np.asarray(p.level, np.int64)))
        return pa.table(cols)

    def formatted(chunk: pa.Table, header: bool) -> pa.Buffer:
        out = pa.BufferOutputStream()
        pacsv.write_csv(chunk, out, write_options=pacsv.WriteOptions(include_header=header, quoting_style="none"))
        return out.getvalue()

    levels = pa.array(bl.LEVELS, pa.string())  # a level's name taken by index in Arrow (no Python strings)
    n = len(table["true_rtt"])
    schema = None
    pending = collections.deque()
    with open(path, "wb") as f, concurrent.futures.ThreadPoolExecutor(2) as pool:
        for lo in range(0, max(n, 1), chunk_rows):
            chunk = chunk_at(lo)
            if schema is None:
                schema = chunk.schema
            pending.append(pool.submit(formatted, chunk if chunk.schema == schema else chunk.cast(schema), lo == 0))
            while len(pending) > 2:  # at most three chunks' text in memory
                f.write(pending.popleft().result())
        while pending:
            f.write(pending.popleft().result())


def plot(table: dict, path: str, names: tuple = (MODEL, "dst_median"), *, max_points: int = 5000, seed: int = 0) -> None:
    """Predicted vs true RTT (log-log) for two predictors (the model with its 10-90% interval), on at most
    ``max_points`` measurements (a seeded choice: a whole split would only draw a blot, slowly)."""
    # matplotlib here, not at the top: the Agg backend must be chosen before pyplot loads, and choosing it
    # when this module is imported would change the backend of any program that imports it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true = np.asarray(table["true_rtt"])
    keep = choose(len(true), max_points, seed)
    true = true[keep]
    seen = true[true > 0]
    # Axes span the true RTTs with a decade to spare; wilder predictions (an undertrained model samples
    # raw float64 bytes) are drawn at the edge rather than stretching the axes to 1e300.
    lim = (seen.min() / 10, seen.max() * 10) if len(seen) else (0.1, 1000.0)
    clip = lambda a: np.clip(a, *lim)  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    for ax, name in zip(axes, names):
        p = table[name].take(keep)
        ok = (true > 0) & np.isfinite(p.value) & (p.value > 0)
        value = clip(p.value[ok])
        if name == MODEL:
            lo = np.clip(value - clip(np.nan_to_num(p.low[ok], nan=lim[0])), 0, None)
            hi = np.clip(clip(np.nan_to_num(p.high[ok], nan=lim[1])) - value, 0, None)
            ax.errorbar(true[ok], value, yerr=[lo, hi], fmt="o", ms=3, alpha=0.5, elinewidth=0.5,
                        label="descent median, 10-90% bar")
        else:
            ax.plot(true[ok], value, "o", ms=3, alpha=0.5, label=name)
        ax.plot(lim, lim, "k--", lw=0.8, label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_xlabel("true RTT (ms)")
        ax.set_title(name)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("predicted RTT (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, table: dict, output: str) -> list[str]:
    """Write report.json, report.md, the plots, predictions.csv and report.html (the Markdown's tables and
    text with the figures embedded) under ``output``; returns their paths."""
    os.makedirs(output, exist_ok=True)
    paths = [os.path.join(output, name) for name in (REPORT_JSON, REPORT_MD, PLOT_PNG, PREDICTIONS_CSV)]
    with atomic_path(paths[0]) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    markdown = render_markdown(report)
    with open(paths[1], "w") as f:
        f.write(markdown)
    plot(table, paths[2], (MODEL, "dst_median") if MODEL in table else (co.MF, "dst_median"))
    write_predictions(table, paths[3])
    if "distribution" in report["rtt"]:
        paths.append(os.path.join(output, RELIABILITY_PNG))
        pr.plot_reliability(report["rtt"]["distribution"], paths[-1])
    paths.append(os.path.join(output, REPORT_HTML))
    with atomic_path(paths[-1]) as tmp, open(tmp, "w") as f:
        f.write(html_report.render(markdown, output))
    return paths
