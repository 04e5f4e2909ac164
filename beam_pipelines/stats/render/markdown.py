"""``report.md``: the Markdown text of a raw or a dataset report."""

from __future__ import annotations

from beam_pipelines.stats.render import tables
from beam_pipelines.stats.render.formatting import pct


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-" * (len(h) + 2) for h in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render_raw_markdown(r: dict) -> str:
    """``report.md`` of a raw (Parquet) report."""
    lines = ["# Ping data report", "", f"**Source:** `{r['input']['pattern']}`", ""]
    lines += _table(["Metric", "Value"], tables.raw_summary_rows(r))
    lines += ["", "**Value Ranges:**"] + [f"- {line}" for line in tables.raw_value_ranges(r)]
    lines += ["", "## RTT of successful pings by IP version", ""]
    lines += _table(["IP version", "pings", "min", "p50", "p90", "p99", "max"], tables.rtt_rows(r))
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
        lines += _table([column, "rows", "share"], tables.top_rows(r, column))
    lines += ["", "## Method", ""]
    lines += [
        f"- Quantiles: {r['methods']['quantiles']}.",
        f"- Distinct counts: {r['methods']['distinct']}.",
        "- Every other figure is an exact count.",
    ]
    return "\n".join(lines) + "\n"


def render_dataset_markdown(r: dict) -> str:
    """``report.md`` of a pretokenized dataset report."""
    lines = ["# Pretokenized dataset report", ""]
    lines += _table(["Metric", "Value"], tables.dataset_summary_rows(r))
    lines += ["", "## Splits", ""] + _table(tables.SPLIT_HEADER, tables.split_rows(r))
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
        + [
            [k.replace("_", " "), f"{n:,}"]
            for k, n in v.items()
            if k.endswith("_tokens") and k not in ("byte_tokens", "pad_tokens", "out_of_vocab_tokens")
        ]
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
