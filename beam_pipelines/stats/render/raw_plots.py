"""The figures of a raw (Parquet) report, each a base64 PNG named in :data:`RAW_FIGURES`."""

from __future__ import annotations

import numpy as np

from beam_pipelines.stats.render.formatting import human, ms, pct
from beam_pipelines.stats.render.plotting import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    RED,
    count_axis,
    empty,
    png,
    pyplot,
    reasons_figure,
)

RAW_FIGURES = (
    ("rtt-histogram", "RTT histogram (successful pings, log axis)"),
    ("rtt-cdf", "RTT CDF per IP version"),
    ("rows-per-day", "Rows per day"),
    ("ip-version-share", "IPv4 / IPv6 share"),
    ("failure-rate", "Failure rate per day"),
    ("size-distribution", "Packet size distribution"),
    ("error-count-distribution", "Packet error count distribution"),
    ("top-msm-id", "Top measurement ids (msm_id)"),
    ("top-sources", "Top sources (src_addr)"),
    ("top-destinations", "Top destinations (dst_addr)"),
    ("rejected-by-reason", "Rows the tokenizer would reject, by reason"),
)
_FAMILY_COLOR = {"4": BLUE, "6": ORANGE, "other": GREY}
_TOP_SHOWN = 15


def _barh_top(plt, entries: list[dict], total: int, color: str, err: int):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    entries = entries[:_TOP_SHOWN]
    if not entries:
        empty(ax)
        return fig
    labels = [str(e["value"]) for e in entries][::-1]
    values = [e["rows"] for e in entries][::-1]
    ax.barh(range(len(values)), values, color=color)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {pct(v, total, 2)}", va="center", fontsize=7, color="#444")
    ax.set_xlabel("rows" + (f" (each low by at most {err:,})" if err else ""))
    count_axis(ax, "x")
    ax.margins(x=0.15)
    ax.grid(axis="y", visible=False)
    return fig


def _value_bars(plt, counts: dict[str, int], xlabel: str, color: str):
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if not counts:
        empty(ax)
        return fig
    labels, values = list(counts), list(counts.values())
    ax.bar(range(len(values)), values, color=color)
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(0.5, min(values) / 3))  # so the smallest bars still show on the log axis
    ax.set_xticks(
        range(len(values)),
        labels,
        rotation=45 if len(labels) > 8 else 0,
        ha="right" if len(labels) > 8 else "center",
        fontsize=8,
    )
    total = sum(values)
    for i, v in enumerate(values):
        ax.text(i, v, pct(v, total), ha="center", va="bottom", fontsize=7, color="#444")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows (log)")
    ax.grid(axis="x", visible=False)
    return fig


def _day_axis(ax, days: list[str]):
    step = max(1, len(days) // 10)
    ax.set_xticks(
        range(0, len(days), step),
        [d[5:] if len(d) == 10 else d for d in days[::step]],
        rotation=45,
        ha="right",
        fontsize=8,
    )


def raw_figures(r: dict) -> dict[str, str]:
    """Base64 PNG of every figure in :data:`RAW_FIGURES`, by id."""
    plt = pyplot()
    figs: dict[str, str] = {}
    rows = r["rows"]

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    hist = r.get("rtt_ms_histogram")
    if hist and sum(hist["counts"]):
        edges = np.array(hist["edges"])
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color=BLUE, linewidth=0)
        ax.set_xscale("log")
        for p, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            v = r["rtt_ms"][p]
            ax.axvline(max(v, edges[0]), color=RED, linestyle=style, linewidth=1, label=f"{p} {ms(v)}")
        ax.legend(fontsize=8)
        ax.set_xlabel("RTT (ms, log scale)")
        ax.set_ylabel("pings")
        count_axis(ax)
    else:
        empty(ax, "no successful pings")
    figs["rtt-histogram"] = png(plt, fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    drawn = False
    for fam, t in r["rtt_ms_by_ip_version"].items():
        if t.get("count"):
            x = np.maximum(np.array(t["cdf"]["ms"]), 1e-3)
            label = {"4": "IPv4", "6": "IPv6"}.get(fam, fam)
            ax.plot(
                x,
                np.array(t["cdf"]["percent"]) / 100,
                color=_FAMILY_COLOR.get(fam, GREY),
                label=f"{label} ({human(t['count'])} pings)",
            )
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_xlabel("RTT (ms, log scale)")
        ax.set_ylabel("fraction of pings ≤ RTT")
        ax.legend(fontsize=8, loc="lower right")
    else:
        empty(ax, "no successful pings")
    figs["rtt-cdf"] = png(plt, fig)

    days = list(r["per_day"])
    per_day = list(r["per_day"].values())
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if days:
        v4 = np.array([d["ipv4_rows"] for d in per_day])
        v6 = np.array([d["ipv6_rows"] for d in per_day])
        other = np.array([d["rows"] for d in per_day]) - v4 - v6
        ax.bar(range(len(days)), v4, color=BLUE, label="IPv4")
        ax.bar(range(len(days)), v6, bottom=v4, color=ORANGE, label="IPv6")
        if other.any():
            ax.bar(range(len(days)), other, bottom=v4 + v6, color=GREY, label="other")
        _day_axis(ax, days)
        ax.set_ylabel("rows")
        count_axis(ax)
        ax.set_ylim(0, 1.18 * max(d["rows"] for d in per_day))
        ax.legend(fontsize=8, ncol=3, loc="upper left")
        ax.grid(axis="x", visible=False)
    else:
        empty(ax)
    figs["rows-per-day"] = png(plt, fig)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6.4, 3.0), gridspec_kw={"width_ratios": [1, 3]})
    if rows:
        parts = [
            ("IPv4", r["ipv4_rows"], BLUE),
            ("IPv6", r["ipv6_rows"], ORANGE),
            ("other", r["other_ip_version_rows"], GREY),
        ]
        bottom = 0
        for label, n, color in parts:
            if n:
                ax0.bar(0, n / rows, bottom=bottom, color=color, width=0.6)
                ax0.text(
                    0,
                    bottom + n / rows / 2,
                    f"{label}\n{pct(n, rows)}",
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=8,
                )
                bottom += n / rows
        ax0.set_xticks([0], ["all rows"])
        ax0.set_ylim(0, 1)
        ax0.set_ylabel("share of rows")
        ax0.grid(False)
        if days:
            totals = np.array([d["rows"] for d in per_day])
            share4 = np.array([d["ipv4_rows"] for d in per_day]) / np.maximum(totals, 1)
            share6 = np.array([d["ipv6_rows"] for d in per_day]) / np.maximum(totals, 1)
            ax1.stackplot(range(len(days)), share4, share6, colors=[BLUE, ORANGE], labels=["IPv4", "IPv6"])
            ax1.set_ylim(0, 1)
            ax1.set_xlim(0, max(1, len(days) - 1))
            _day_axis(ax1, days)
            ax1.set_title("per day", fontsize=9)
        else:
            empty(ax1)
    else:
        empty(ax0)
        empty(ax1)
    figs["ip-version-share"] = png(plt, fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if days:
        rate = np.array([d["failed_rows"] / d["rows"] if d["rows"] else 0 for d in per_day])
        ax.plot(range(len(days)), 100 * rate, color=RED, marker="o", markersize=3, label="per day")
        ax.axhline(
            100 * (r["failure_rate"] or 0),
            color=GREY,
            linestyle="--",
            linewidth=1,
            label=f"overall {pct(r['failed_rows'], rows, 2)}",
        )
        _day_axis(ax, days)
        ax.set_ylabel("failed pings (rtt < 0), %")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    else:
        empty(ax)
    figs["failure-rate"] = png(plt, fig)

    figs["size-distribution"] = png(plt, _value_bars(plt, r["size_counts"], "size (bytes)", BLUE))
    figs["error-count-distribution"] = png(
        plt, _value_bars(plt, r["packet_error_count_counts"], "packet_error_count", ORANGE)
    )
    figs["top-msm-id"] = png(plt, _barh_top(plt, r["top"]["msm_id"], rows, GREEN, r["top_count_error"]["msm_id"]))
    figs["top-sources"] = png(plt, _barh_top(plt, r["top"]["src_addr"], rows, BLUE, r["top_count_error"]["src_addr"]))
    figs["top-destinations"] = png(
        plt, _barh_top(plt, r["top"]["dst_addr"], rows, ORANGE, r["top_count_error"]["dst_addr"])
    )
    figs["rejected-by-reason"] = png(plt, reasons_figure(plt, r["rejected_by_reason"], rows))
    return figs
