"""``report.html``: one self-contained page per report, its tables and every figure embedded as a PNG."""

from __future__ import annotations

import html
import re

from beam_pipelines.stats.render import tables
from beam_pipelines.stats.render.dataset_plots import DATASET_FIGURES, dataset_figures
from beam_pipelines.stats.render.formatting import pct
from beam_pipelines.stats.render.raw_plots import RAW_FIGURES, raw_figures

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
    """``report.html`` of a raw (Parquet) report."""
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
        f"<div><h3 style='font-size:13px'>{c}</h3>{_html_table([c, 'rows', 'share'], tables.top_rows(r, c))}</div>"
        for c in ("msm_id", "src_addr", "dst_addr")
    )
    sections = [
        (
            "Summary",
            _html_table(["Metric", "Value"], tables.raw_summary_rows(r), align_numbers=False)
            + "<ul>"
            + "".join(f"<li>{html.escape(x)}</li>" for x in tables.raw_value_ranges(r))
            + "</ul>",
        ),
        (
            "RTT of successful pings by IP version",
            _html_table(["IP version", "pings", "min", "p50", "p90", "p99", "max"], tables.rtt_rows(r)),
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
    """``report.html`` of a pretokenized dataset report."""
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
        ("Summary", _html_table(["Metric", "Value"], tables.dataset_summary_rows(r), align_numbers=False)),
        ("Splits", _html_table(tables.SPLIT_HEADER, tables.split_rows(r))),
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
    """``report.html`` text (self-contained); raises :class:`.plotting.MissingMatplotlib` without matplotlib."""
    return render_raw_html(report) if report["report"] == "parquet" else render_dataset_html(report)
