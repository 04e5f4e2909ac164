"""The figures of a pretokenized dataset report, each a base64 PNG named in :data:`DATASET_FIGURES`."""

from __future__ import annotations

import numpy as np

from beam_pipelines.stats.render.formatting import pct
from beam_pipelines.stats.render.plotting import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    count_axis,
    empty,
    png,
    pyplot,
    reasons_figure,
)
from tokenizer import get_scheme

DATASET_FIGURES = (
    ("split-sizes", "Split sizes"),
    ("tokens-per-record", "Tokens per record"),
    ("measurements-per-record", "Measurements per record"),
    ("padding", "Padding"),
    ("vocabulary-use", "Vocabulary use (token-id histogram)"),
    ("rejected-by-reason", "Rejected rows by reason (from the manifest)"),
)
_SPLIT_COLOR = {"train": BLUE, "val": ORANGE, "test": GREEN}


def _per_record_plot(plt, r: dict, key: str, xlabel: str, log: bool = False):
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    drawn = False
    for name, s in r["splits"].items():
        counts = s[key]["counts"]
        if not counts:
            continue
        x = np.array([int(k) for k in counts])
        y = np.array(list(counts.values()))
        full = np.zeros(x.max() - x.min() + 3)
        full[x - x.min() + 1] = y / y.sum()  # (range + 2,): a zero on each side closes the steps
        ax.step(
            np.arange(x.min() - 1, x.max() + 2),
            full,
            where="mid",
            color=_SPLIT_COLOR.get(name, GREY),
            label=f"{name}: min {s[key]['min']}, mean {s[key]['mean']:.1f}, max {s[key]['max']}",
        )
        drawn = True
    if drawn:
        ax.set_xlabel(xlabel)
        if log:
            # Packing puts most records within a few tokens of seq_len; a log axis keeps the tail visible.
            ax.set_yscale("log")
            ax.set_ylabel("share of records (log)")
        else:
            ax.set_ylabel("share of records")
            ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="upper left")
    else:
        empty(ax)
    return fig


def dataset_figures(r: dict) -> dict[str, str]:
    """Base64 PNG of every figure in :data:`DATASET_FIGURES`, by id."""
    plt = pyplot()
    figs: dict[str, str] = {}
    names = list(r["splits"])
    splits = list(r["splits"].values())

    fig, axes = plt.subplots(1, 3, figsize=(7.2, 2.8))
    for ax, key, label in zip(
        axes, ("records", "measurements", "tokens"), ("records", "measurements", "tokens (non-PAD)")
    ):
        values = [s[key] for s in splits]
        ax.bar(names, values, color=[_SPLIT_COLOR.get(n, GREY) for n in names])
        total = sum(values)
        for i, v in enumerate(values):
            ax.text(i, v, pct(v, total), ha="center", va="bottom", fontsize=7, color="#444")
        ax.set_title(label, fontsize=9)
        count_axis(ax)
        ax.grid(axis="x", visible=False)
    fig.tight_layout()
    figs["split-sizes"] = png(plt, fig)

    figs["tokens-per-record"] = png(
        plt,
        _per_record_plot(plt, r, "tokens_per_record", f"non-PAD tokens in a record (seq_len {r['seq_len']})", log=True),
    )
    figs["measurements-per-record"] = png(
        plt, _per_record_plot(plt, r, "measurements_per_record", "measurements in a record")
    )

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7.2, 3.0), gridspec_kw={"width_ratios": [2, 3]})
    fractions = [100 * (s["pad_fraction"] or 0) for s in splits]
    ax0.bar(names, fractions, color=[_SPLIT_COLOR.get(n, GREY) for n in names])
    for i, (v, s) in enumerate(zip(fractions, splits)):
        ax0.text(i, v, f"{v:.2f}%", ha="center", va="bottom", fontsize=7, color="#444")
    ax0.set_ylabel("PAD share of record tokens, %")
    ax0.margins(y=0.2)
    ax0.grid(axis="x", visible=False)
    drawn = False
    for name, s in r["splits"].items():
        counts = s["tokens_per_record"]["counts"]
        if counts:
            pad = np.array([r["seq_len"] - int(k) for k in counts])
            n = np.array(list(counts.values()))
            order = np.argsort(pad)
            ax1.plot(
                pad[order],
                np.cumsum(n[order]) / n.sum(),
                drawstyle="steps-post",
                color=_SPLIT_COLOR.get(name, GREY),
                label=name,
            )
            drawn = True
    if drawn:
        ax1.set_xscale("symlog", linthresh=10)
        ax1.set_xlabel("PAD tokens in a record (log beyond 10)")
        ax1.set_ylabel("share of records ≤ x")
        ax1.set_ylim(0, 1.02)
        ax1.legend(fontsize=8, loc="lower right")
    else:
        empty(ax1)
    fig.tight_layout()
    figs["padding"] = png(plt, fig)

    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    counts = np.array(r["token_histogram"], dtype=float)
    ids = np.arange(len(counts))
    legend = r["vocabulary"].get("legend") or get_scheme(r["manifest"]["tokenizer"]).legend
    roles = r["vocabulary"].get("roles")  # v1 reports name their role ids (the first ids), then bytes, PAD
    colors = [BLUE] * len(counts)
    if roles is not None:
        colors = [GREEN] * len(roles) + [BLUE] * (len(counts) - len(roles) - 1) + [GREY]
    ax.bar(ids, np.where(counts > 0, counts, np.nan), width=1.0, color=colors[: len(counts)], linewidth=0)
    ax.set_yscale("log")
    ax.set_xlim(-1, len(counts))
    ax.set_xlabel(f"token id ({legend}); {r['vocabulary']['used_ids']} of {r['vocabulary']['size']} ids used")
    ax.set_ylabel("occurrences (log)")
    figs["vocabulary-use"] = png(plt, fig)

    figs["rejected-by-reason"] = png(plt, reasons_figure(plt, r["rejected"]["by_reason"], None))
    return figs
