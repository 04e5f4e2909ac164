"""Human-readable renderings of a stats report: ``report.md`` and a self-contained ``report.html``.

Both are built from the ``report.json`` dictionary alone, so a report can be re-rendered without
re-reading the data. The HTML embeds every plot as a base64 PNG (matplotlib, Agg backend), with one
``<figure id=...>`` per plot named in :data:`RAW_FIGURES` / :data:`DATASET_FIGURES`. matplotlib is
imported lazily: without it (the base install) :func:`render_html` raises :class:`MissingMatplotlib`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re

from tokenizer import get_scheme

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
DATASET_FIGURES = (
    ("split-sizes", "Split sizes"),
    ("tokens-per-record", "Tokens per record"),
    ("measurements-per-record", "Measurements per record"),
    ("padding", "Padding"),
    ("vocabulary-use", "Vocabulary use (token-id histogram)"),
    ("rejected-by-reason", "Rejected rows by reason (from the manifest)"),
)

_BLUE, _ORANGE, _GREEN, _RED, _GREY = "#2a6fbb", "#e07b39", "#3a9e6f", "#c0392b", "#8a8f98"
_FAMILY_COLOR = {"4": _BLUE, "6": _ORANGE, "other": _GREY}
_SPLIT_COLOR = {"train": _BLUE, "val": _ORANGE, "test": _GREEN}
_TOP_SHOWN = 15


class MissingMatplotlib(RuntimeError):
    """matplotlib is not installed (it comes with the ``report`` extra)."""


# --- number formatting -----------------------------------------------------------------------------


def human(n: float | None) -> str:
    """Short count, like the seed's table: 57.7M, 66.3K, 912."""
    if n is None:
        return "-"
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.1f}{suffix}"
    return f"{n:,}" if isinstance(n, int) else f"{n:.3g}"


def human_bytes(n: int) -> str:
    for size, suffix in ((1 << 40, "TB"), (1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if n >= size:
            return f"{n / size:.1f} {suffix}"
    return f"{n} B"


def pct(part: int, whole: int, digits: int = 1) -> str:
    return f"{100 * part / whole:.{digits}f}%" if whole else "-"


def ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.3f}".rstrip("0").rstrip(".") + " ms"


def _distinct(report: dict, column: str) -> str:
    d = report["distinct"][column]
    if d["exact"]:
        return f"{d['count']:,}"
    return f"≈{d['count']:,} ± {100 * d['relative_error_bound']:.1f}%"


def _mostly(counts: dict[str, int], unit: str) -> str:
    if not counts:
        return "no values"
    total = sum(counts.values())
    top = max(counts, key=lambda k: counts[k])
    numeric = [int(k) for k in counts if k.lstrip("-").isdigit()]
    out = f"mostly {top}{unit} ({pct(counts[top], total)})"
    if numeric:
        out += f", max {max(numeric)}"
    others = [k for k in counts if not k.lstrip("-").isdigit()]
    if others:
        out += ", also " + ", ".join(f"{k}: {counts[k]:,}" for k in others)
    return out


def _quantile_text(rtt: dict) -> str:
    if not rtt.get("count"):
        return "no successful pings"
    parts = []
    for p in ("p50", "p90", "p99"):
        text = f"{p}={ms(rtt[p])}"
        bound = rtt["rank_error_bound"][p]
        if bound:
            text += f" (rank error ≤ {100 * bound:.3f}%)"
        parts.append(text)
    return ", ".join(parts) + (" (exact)" if rtt["exact"] else "")


# --- markdown --------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-" * (len(h) + 2) for h in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def raw_summary_rows(r: dict) -> list[list[str]]:
    """The ``| Metric | Value |`` rows of a raw report, like the seed's Dataset Info table."""
    rows = r["rows"]
    date = "-"
    if r["event_time_min"]:
        date = f"{r['event_time_min'][:10]} to {r['event_time_max'][:10]} ({r['days_with_rows']} days with rows)"
    out = [
        ["Rows", f"{rows:,}"],
        ["Size", f"{human_bytes(r['input']['bytes'])} in {len(r['input']['files'])} file(s)"],
        ["Date range", date],
        ["Measurements", f"{_distinct(r, 'msm_id')} distinct msm_id"],
        ["Sources", f"{_distinct(r, 'src_addr')} distinct src_addr"],
        ["Destinations", f"{_distinct(r, 'dst_addr')} distinct dst_addr"],
        ["IPv4", f"{human(r['ipv4_rows'])} ({pct(r['ipv4_rows'], rows)})"],
        ["IPv6", f"{human(r['ipv6_rows'])} ({pct(r['ipv6_rows'], rows)})"],
    ]
    if r["other_ip_version_rows"]:
        out.append(["Other ip_version", f"{r['other_ip_version_rows']:,} ({pct(r['other_ip_version_rows'], rows, 2)})"])
    out += [
        ["Failed pings (rtt < 0)", f"{human(r['failed_rows'])} ({pct(r['failed_rows'], rows, 2)})"],
        ["Tokenizer would reject", f"{r['rejected_rows']:,} ({pct(r['rejected_rows'], rows, 2)})"],
        ["Tokens if pretokenized", human(r["tokenizer"]["tokens"])],
    ]
    if r["rtt_null_rows"] or r["rtt_not_finite_rows"]:
        out.append(["RTT null / NaN or inf", f"{r['rtt_null_rows']:,} / {r['rtt_not_finite_rows']:,}"])
    if r["event_time_null_rows"]:
        out.append(["event_time null", f"{r['event_time_null_rows']:,}"])
    return out


def raw_value_ranges(r: dict) -> list[str]:
    rtt = r["rtt_ms"]
    if rtt.get("count"):
        rtt_line = f"RTT: {r['failed_rows']:,} failed (rtt < 0); successful from {ms(rtt['min'])} to {ms(rtt['max'])}; {_quantile_text(rtt)}"
    else:
        rtt_line = f"RTT: {r['failed_rows']:,} failed (rtt < 0); no successful pings"
    return [
        rtt_line,
        f"Size: {_mostly(r['size_counts'], ' bytes')}",
        f"Errors: {_mostly(r['packet_error_count_counts'], '')}",
    ]


def _rtt_rows(r: dict) -> list[list[str]]:
    rows = []
    for fam, label in (("4", "IPv4"), ("6", "IPv6"), ("other", "other"), (None, "all")):
        t = r["rtt_ms"] if fam is None else r["rtt_ms_by_ip_version"].get(fam)
        if t is None or (fam == "other" and not t.get("count")):
            continue
        if not t.get("count"):
            rows.append([label, "0", "-", "-", "-", "-", "-"])
            continue
        rows.append([label, f"{t['count']:,}", ms(t["min"]), ms(t["p50"]), ms(t["p90"]), ms(t["p99"]), ms(t["max"])])
    return rows


def _top_rows(r: dict, column: str, k: int = 10) -> list[list[str]]:
    err = r["top_count_error"][column]
    return [
        [str(e["value"]), f"{e['rows']:,}" + (f" (+ up to {err:,})" if err else ""), pct(e["rows"], r["rows"], 2)]
        for e in r["top"][column][:k]
    ]


def render_raw_markdown(r: dict) -> str:
    lines = ["# Ping data report", "", f"**Source:** `{r['input']['pattern']}`", ""]
    lines += _table(["Metric", "Value"], raw_summary_rows(r))
    lines += ["", "**Value Ranges:**"] + [f"- {line}" for line in raw_value_ranges(r)]
    lines += ["", "## RTT of successful pings by IP version", ""]
    lines += _table(["IP version", "pings", "min", "p50", "p90", "p99", "max"], _rtt_rows(r))
    lines += ["", "## Rows the tokenizer would reject", ""]
    if r["rejected_by_reason"]:
        lines += _table(
            ["reason", "rows", "share"],
            [[k, f"{v:,}", pct(v, r["rows"], 3)] for k, v in r["rejected_by_reason"].items()],
        )
    else:
        lines.append("None: every row can be encoded.")
    lines += ["", "## Rows per day", ""]
    lines += _table(
        ["day (UTC)", "rows", "IPv4", "IPv6", "failed"],
        [
            [
                d,
                f"{v['rows']:,}",
                f"{v['ipv4_rows']:,}",
                f"{v['ipv6_rows']:,}",
                f"{v['failed_rows']:,} ({pct(v['failed_rows'], v['rows'], 2)})",
            ]
            for d, v in r["per_day"].items()
        ],
    )
    if r["event_time_null_rows"]:
        lines.append(f"\nPlus {r['event_time_null_rows']:,} rows without event_time.")
    for column, title in (("msm_id", "measurement ids"), ("src_addr", "sources"), ("dst_addr", "destinations")):
        lines += ["", f"## Top {title}", ""]
        lines += _table([column, "rows", "share"], _top_rows(r, column))
    lines += ["", "## Method", ""]
    lines += [
        f"- Quantiles: {r['methods']['quantiles']}.",
        f"- Distinct counts: {r['methods']['distinct']}.",
        "- Every other figure is an exact count.",
    ]
    return "\n".join(lines) + "\n"


def dataset_summary_rows(r: dict) -> list[list[str]]:
    t = r["totals"]
    return [
        ["Dataset", f"`{r['dataset']}`"],
        [
            "Tokenizer",
            f"{r['manifest']['tokenizer']['name']} (vocab {r['manifest']['tokenizer']['vocab_size']}), seq_len {r['seq_len']}",
        ],
        ["Records", f"{t['records']:,}"],
        [
            "Measurements",
            f"{t['measurements']:,} ({human(t['ipv4_measurements'])} IPv4, {human(t['ipv6_measurements'])} IPv6)",
        ],
        [
            "Tokens",
            f"{t['tokens']:,} + {t['pad_tokens']:,} PAD ({pct(t['pad_tokens'], t['tokens'] + t['pad_tokens'], 2)} padding)",
        ],
        ["Sources", f"{t['sources']:,} distinct"],
        ["Files", f"{t['files']} ({human_bytes(t['bytes'])})"],
        ["Vocabulary used", f"{r['vocabulary']['used_ids']} of {r['vocabulary']['size']} ids"],
        ["Rejected rows", f"{r['rejected']['total']:,}"],
        ["Manifest agrees", "yes" if r["checks"]["manifest_agrees"] else "NO: " + "; ".join(r["checks"]["mismatches"])],
        ["Fingerprint", f"`{r['manifest']['fingerprint']}`"],
        ["Version", f"{r.get('version', 1)}"],
    ]


def _split_rows(r: dict) -> list[list[str]]:
    rows = []
    for name, s in list(r["splits"].items()) + [("total", r["totals"])]:
        mpr = s["measurements_per_record"]
        rows.append(
            [
                name,
                f"{s['records']:,}",
                f"{s['measurements']:,}",
                f"{s['tokens']:,}",
                f"{s['pad_tokens']:,}",
                f"{100 * s['pad_fraction']:.2f}%" if s["pad_fraction"] is not None else "-",
                f"{mpr['min']} / {mpr['mean']:.2f} / {mpr['max']}" if mpr["min"] is not None else "-",
                f"{s['sources']:,}",
            ]
        )
    return rows


_SPLIT_HEADER = [
    "split",
    "records",
    "measurements",
    "tokens",
    "pad tokens",
    "padding",
    "measurements/record (min/mean/max)",
    "sources",
]


def render_dataset_markdown(r: dict) -> str:
    lines = ["# Pretokenized dataset report", ""]
    lines += _table(["Metric", "Value"], dataset_summary_rows(r))
    lines += ["", "## Splits", ""] + _table(_SPLIT_HEADER, _split_rows(r))
    lines += ["", "## Rejected rows by reason (from the manifest)", ""]
    if r["rejected"]["by_reason"]:
        lines += _table(["reason", "rows"], [[k, f"{v:,}"] for k, v in r["rejected"]["by_reason"].items()])
    else:
        lines.append("None.")
    v = r["vocabulary"]
    lines += ["", "## Vocabulary use", ""]
    lines += _table(
        ["tokens", "count"],
        [[k, f"{n:,}"] for k, n in v.get("roles", {}).items()]
        + [["byte tokens (256 ids)", f"{v['byte_tokens']:,}"]]
        # a scheme without role ids (v2) reports its id groups instead
        + [[k.replace("_", " "), f"{n:,}"] for k, n in v.items()
           if k.endswith("_tokens") and k not in ("byte_tokens", "pad_tokens", "out_of_vocab_tokens")]
        + [["PAD", f"{v['pad_tokens']:,}"]],
    )
    if v["unused_ids"]:
        lines.append(
            f"\nUnused ids: {', '.join(map(str, v['unused_ids'][:40]))}{' …' if len(v['unused_ids']) > 40 else ''}"
        )
    checks = r["checks"]
    lines += ["", "## Checks", ""]
    lines.append("- Every file's record count, size and sha256 match the manifest (else the report would not exist).")
    lines.append(f"- Split counts agree with the manifest: {'yes' if checks['manifest_agrees'] else 'no'}.")
    lines += [f"  - {m}" for m in checks["mismatches"]]
    lines.append(
        f"- Malformed records (PAD inside, or not starting with MeasurementStart): {checks['malformed_records']:,}."
    )
    lines.append(f"- Token ids outside the vocabulary: {checks['out_of_vocab_tokens']:,}.")
    lines.append("- Every figure is an exact count over every record.")
    return "\n".join(lines) + "\n"


def render_markdown(report: dict) -> str:
    """``report.md`` text for a raw or a dataset report."""
    return render_raw_markdown(report) if report["report"] == "parquet" else render_dataset_markdown(report)


# --- plots -----------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingMatplotlib(
            "matplotlib is not installed; install the 'report' extra (pip install 'ping-llm[report]')"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": "#e4e6ea",
            "grid.linewidth": 0.6,
            "axes.axisbelow": True,
            "axes.titlesize": 10,
            "legend.frameon": False,
        }
    )
    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax, text: str = "no data"):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=_GREY, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _count_axis(ax, axis: str = "y"):
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: human(int(v)) if v == int(v) else f"{v:g}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _barh_top(plt, entries: list[dict], total: int, color: str, err: int):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    entries = entries[:_TOP_SHOWN]
    if not entries:
        _empty(ax)
        return fig
    labels = [str(e["value"]) for e in entries][::-1]
    values = [e["rows"] for e in entries][::-1]
    ax.barh(range(len(values)), values, color=color)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {pct(v, total, 2)}", va="center", fontsize=7, color="#444")
    ax.set_xlabel("rows" + (f" (each low by at most {err:,})" if err else ""))
    _count_axis(ax, "x")
    ax.margins(x=0.15)
    ax.grid(axis="y", visible=False)
    return fig


def _value_bars(plt, counts: dict[str, int], xlabel: str, color: str):
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if not counts:
        _empty(ax)
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


def _reasons(plt, by_reason: dict[str, int], total: int | None):
    fig, ax = plt.subplots(figsize=(6.4, max(2.2, 0.32 * len(by_reason) + 1.2)))
    if not by_reason:
        _empty(ax, "no rejected rows")
        return fig
    labels, values = list(by_reason)[::-1], list(by_reason.values())[::-1]
    ax.barh(range(len(values)), values, color=_RED)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,}" + (f" ({pct(v, total, 3)})" if total else ""), va="center", fontsize=7, color="#444")
    ax.set_xlabel("rows")
    _count_axis(ax, "x")
    ax.margins(x=0.25)
    ax.grid(axis="y", visible=False)
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
    plt = _pyplot()
    import numpy as np

    figs: dict[str, str] = {}
    rows = r["rows"]

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    hist = r.get("rtt_ms_histogram")
    if hist and sum(hist["counts"]):
        edges = np.array(hist["edges"])
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color=_BLUE, linewidth=0)
        ax.set_xscale("log")
        for p, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            v = r["rtt_ms"][p]
            ax.axvline(max(v, edges[0]), color=_RED, linestyle=style, linewidth=1, label=f"{p} {ms(v)}")
        ax.legend(fontsize=8)
        ax.set_xlabel("RTT (ms, log scale)")
        ax.set_ylabel("pings")
        _count_axis(ax)
    else:
        _empty(ax, "no successful pings")
    figs["rtt-histogram"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    drawn = False
    for fam, t in r["rtt_ms_by_ip_version"].items():
        if t.get("count"):
            x = np.maximum(np.array(t["cdf"]["ms"]), 1e-3)
            label = {"4": "IPv4", "6": "IPv6"}.get(fam, fam)
            ax.plot(
                x,
                np.array(t["cdf"]["percent"]) / 100,
                color=_FAMILY_COLOR.get(fam, _GREY),
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
        _empty(ax, "no successful pings")
    figs["rtt-cdf"] = _png(fig)

    days = list(r["per_day"])
    per_day = list(r["per_day"].values())
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if days:
        v4 = np.array([d["ipv4_rows"] for d in per_day])
        v6 = np.array([d["ipv6_rows"] for d in per_day])
        other = np.array([d["rows"] for d in per_day]) - v4 - v6
        ax.bar(range(len(days)), v4, color=_BLUE, label="IPv4")
        ax.bar(range(len(days)), v6, bottom=v4, color=_ORANGE, label="IPv6")
        if other.any():
            ax.bar(range(len(days)), other, bottom=v4 + v6, color=_GREY, label="other")
        _day_axis(ax, days)
        ax.set_ylabel("rows")
        _count_axis(ax)
        ax.set_ylim(0, 1.18 * max(d["rows"] for d in per_day))
        ax.legend(fontsize=8, ncol=3, loc="upper left")
        ax.grid(axis="x", visible=False)
    else:
        _empty(ax)
    figs["rows-per-day"] = _png(fig)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6.4, 3.0), gridspec_kw={"width_ratios": [1, 3]})
    if rows:
        parts = [
            ("IPv4", r["ipv4_rows"], _BLUE),
            ("IPv6", r["ipv6_rows"], _ORANGE),
            ("other", r["other_ip_version_rows"], _GREY),
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
            ax1.stackplot(range(len(days)), share4, share6, colors=[_BLUE, _ORANGE], labels=["IPv4", "IPv6"])
            ax1.set_ylim(0, 1)
            ax1.set_xlim(0, max(1, len(days) - 1))
            _day_axis(ax1, days)
            ax1.set_title("per day", fontsize=9)
        else:
            _empty(ax1)
    else:
        _empty(ax0)
        _empty(ax1)
    figs["ip-version-share"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    if days:
        rate = np.array([d["failed_rows"] / d["rows"] if d["rows"] else 0 for d in per_day])
        ax.plot(range(len(days)), 100 * rate, color=_RED, marker="o", markersize=3, label="per day")
        ax.axhline(
            100 * (r["failure_rate"] or 0),
            color=_GREY,
            linestyle="--",
            linewidth=1,
            label=f"overall {pct(r['failed_rows'], rows, 2)}",
        )
        _day_axis(ax, days)
        ax.set_ylabel("failed pings (rtt < 0), %")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    else:
        _empty(ax)
    figs["failure-rate"] = _png(fig)

    figs["size-distribution"] = _png(_value_bars(plt, r["size_counts"], "size (bytes)", _BLUE))
    figs["error-count-distribution"] = _png(
        _value_bars(plt, r["packet_error_count_counts"], "packet_error_count", _ORANGE)
    )
    figs["top-msm-id"] = _png(_barh_top(plt, r["top"]["msm_id"], rows, _GREEN, r["top_count_error"]["msm_id"]))
    figs["top-sources"] = _png(_barh_top(plt, r["top"]["src_addr"], rows, _BLUE, r["top_count_error"]["src_addr"]))
    figs["top-destinations"] = _png(
        _barh_top(plt, r["top"]["dst_addr"], rows, _ORANGE, r["top_count_error"]["dst_addr"])
    )
    figs["rejected-by-reason"] = _png(_reasons(plt, r["rejected_by_reason"], rows))
    return figs


def _per_record_plot(plt, r: dict, key: str, xlabel: str, log: bool = False):
    import numpy as np

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
            color=_SPLIT_COLOR.get(name, _GREY),
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
        _empty(ax)
    return fig


def dataset_figures(r: dict) -> dict[str, str]:
    """Base64 PNG of every figure in :data:`DATASET_FIGURES`, by id."""
    plt = _pyplot()
    import numpy as np

    figs: dict[str, str] = {}
    names = list(r["splits"])
    splits = list(r["splits"].values())

    fig, axes = plt.subplots(1, 3, figsize=(7.2, 2.8))
    for ax, key, label in zip(
        axes, ("records", "measurements", "tokens"), ("records", "measurements", "tokens (non-PAD)")
    ):
        values = [s[key] for s in splits]
        ax.bar(names, values, color=[_SPLIT_COLOR.get(n, _GREY) for n in names])
        total = sum(values)
        for i, v in enumerate(values):
            ax.text(i, v, pct(v, total), ha="center", va="bottom", fontsize=7, color="#444")
        ax.set_title(label, fontsize=9)
        _count_axis(ax)
        ax.grid(axis="x", visible=False)
    fig.tight_layout()
    figs["split-sizes"] = _png(fig)

    figs["tokens-per-record"] = _png(
        _per_record_plot(plt, r, "tokens_per_record", f"non-PAD tokens in a record (seq_len {r['seq_len']})", log=True)
    )
    figs["measurements-per-record"] = _png(
        _per_record_plot(plt, r, "measurements_per_record", "measurements in a record")
    )

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7.2, 3.0), gridspec_kw={"width_ratios": [2, 3]})
    fractions = [100 * (s["pad_fraction"] or 0) for s in splits]
    ax0.bar(names, fractions, color=[_SPLIT_COLOR.get(n, _GREY) for n in names])
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
                color=_SPLIT_COLOR.get(name, _GREY),
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
        _empty(ax1)
    fig.tight_layout()
    figs["padding"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    counts = np.array(r["token_histogram"], dtype=float)
    ids = np.arange(len(counts))
    legend = r["vocabulary"].get("legend") or get_scheme(r["manifest"]["tokenizer"]).legend
    roles = r["vocabulary"].get("roles")  # v1 reports name their role ids (the first ids), then bytes, PAD
    colors = [_BLUE] * len(counts)
    if roles is not None:
        colors = [_GREEN] * len(roles) + [_BLUE] * (len(counts) - len(roles) - 1) + [_GREY]
    ax.bar(ids, np.where(counts > 0, counts, np.nan), width=1.0, color=colors[: len(counts)], linewidth=0)
    ax.set_yscale("log")
    ax.set_xlim(-1, len(counts))
    ax.set_xlabel(
        f"token id ({legend}); {r['vocabulary']['used_ids']} of {r['vocabulary']['size']} ids used"
    )
    ax.set_ylabel("occurrences (log)")
    figs["vocabulary-use"] = _png(fig)

    figs["rejected-by-reason"] = _png(_reasons(plt, r["rejected"]["by_reason"], None))
    return figs


# --- html ------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1f2328}
header{background:#1f3b5c;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85;font-size:13px}
main{padding:20px 32px;max-width:1400px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 18px;margin-bottom:18px}
h2{font-size:16px;margin:0 0 10px}
table{border-collapse:collapse;font-size:13px;margin:4px 0 8px}
th,td{padding:4px 10px;border-bottom:1px solid #eaecef;text-align:left}
th{background:#f3f5f7;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:16px}
figure{margin:0;background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:10px}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-weight:600;font-size:14px;margin-bottom:6px}
ul{margin:4px 0;padding-left:20px;font-size:13px} .bad{color:#c0392b;font-weight:600}
"""


_NUMBER = re.compile(r"^[≈]?[\d,.]+(K|M|B|T)?( ms| %|%)?( \(.*\))?$")


def _html_table(header: list[str], rows: list[list[str]], align_numbers: bool = True) -> str:
    def cell(c: str, tag: str, column: int) -> str:
        text = str(c).replace("`", "")
        # Right-align figures (not labels, addresses or ids in the first column) so digits line up.
        numeric = align_numbers and tag == "td" and column > 0 and _NUMBER.match(text) and text.count(".") <= 1
        return f"<{tag}{' class=num' if numeric else ''}>{html.escape(text)}</{tag}>"

    head = "".join(cell(h, "th", i) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(c, "td", i) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figures_html(specs, figs: dict[str, str]) -> str:
    items = []
    for fig_id, title in specs:
        items.append(
            f'<figure id="{fig_id}"><figcaption>{html.escape(title)}</figcaption>'
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{figs[fig_id]}"></figure>'
        )
    return '<div class="grid">' + "".join(items) + "</div>"


def _page(title: str, subtitle: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<section><h2>{html.escape(h)}</h2>{content}</section>" for h, content in sections)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<main>{body}</main></body></html>\n"
    )


def render_raw_html(r: dict) -> str:
    figs = raw_figures(r)
    reasons = (
        _html_table(
            ["reason", "rows", "share"],
            [[k, f"{v:,}", pct(v, r["rows"], 3)] for k, v in r["rejected_by_reason"].items()],
        )
        if r["rejected_by_reason"]
        else "<p>None: every row can be encoded.</p>"
    )
    tops = "".join(
        f"<div><h3 style='font-size:13px'>{c}</h3>{_html_table([c, 'rows', 'share'], _top_rows(r, c))}</div>"
        for c in ("msm_id", "src_addr", "dst_addr")
    )
    sections = [
        (
            "Summary",
            _html_table(["Metric", "Value"], raw_summary_rows(r), align_numbers=False)
            + "<ul>"
            + "".join(f"<li>{html.escape(x)}</li>" for x in raw_value_ranges(r))
            + "</ul>",
        ),
        (
            "RTT of successful pings by IP version",
            _html_table(["IP version", "pings", "min", "p50", "p90", "p99", "max"], _rtt_rows(r)),
        ),
        ("Plots", _figures_html(RAW_FIGURES, figs)),
        ("Rows the tokenizer would reject", reasons),
        ("Top values", f"<div style='display:flex;gap:24px;flex-wrap:wrap'>{tops}</div>"),
        (
            "Method",
            "<ul>"
            + "".join(
                f"<li>{html.escape(x)}</li>"
                for x in (
                    f"Quantiles: {r['methods']['quantiles']}.",
                    f"Distinct counts: {r['methods']['distinct']}.",
                    "Every other figure is an exact count.",
                )
            )
            + "</ul>",
        ),
    ]
    return _page("Ping data report", f"{r['input']['pattern']} · {r['rows']:,} rows", sections)


def render_dataset_html(r: dict) -> str:
    figs = dataset_figures(r)
    checks = r["checks"]
    check_items = [
        "Every file's record count, size and sha256 match the manifest.",
        "Split counts agree with the manifest."
        if checks["manifest_agrees"]
        else "Split counts DISAGREE with the manifest: " + "; ".join(checks["mismatches"]),
        f"Malformed records: {checks['malformed_records']:,}; token ids outside the vocabulary: {checks['out_of_vocab_tokens']:,}.",
    ]
    reasons = (
        _html_table(["reason", "rows"], [[k, f"{v:,}"] for k, v in r["rejected"]["by_reason"].items()])
        if r["rejected"]["by_reason"]
        else "<p>None.</p>"
    )
    sections = [
        ("Summary", _html_table(["Metric", "Value"], dataset_summary_rows(r), align_numbers=False)),
        ("Splits", _html_table(_SPLIT_HEADER, _split_rows(r))),
        ("Plots", _figures_html(DATASET_FIGURES, figs)),
        ("Rejected rows by reason", reasons),
        (
            "Checks",
            "<ul>"
            + "".join(f"<li{' class=bad' if 'DISAGREE' in x else ''}>{html.escape(x)}</li>" for x in check_items)
            + "</ul>",
        ),
    ]
    return _page("Pretokenized dataset report", f"{r['dataset']} · {r['totals']['records']:,} records", sections)


def render_html(report: dict) -> str:
    """``report.html`` text (self-contained); raises :class:`MissingMatplotlib` without matplotlib."""
    return render_raw_html(report) if report["report"] == "parquet" else render_dataset_html(report)
