"""The tables ``report.md`` and ``report.html`` both show, as rows of cell texts, for each report kind."""

from __future__ import annotations

from beam_pipelines.stats.render.formatting import human, human_bytes, ms, pct


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
    """The "Value Ranges" lines of a raw report: RTT, packet size, packet error count."""
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


def rtt_rows(r: dict) -> list[list[str]]:
    """Rows of the RTT table of a raw report: count, min, p50, p90, p99, max per IP version, then all."""
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


def top_rows(r: dict, column: str, k: int = 10) -> list[list[str]]:
    """The ``k`` most frequent values of ``column`` in a raw report: value, rows (with its error bound), share."""
    err = r["top_count_error"][column]
    return [
        [str(e["value"]), f"{e['rows']:,}" + (f" (+ up to {err:,})" if err else ""), pct(e["rows"], r["rows"], 2)]
        for e in r["top"][column][:k]
    ]


def dataset_summary_rows(r: dict) -> list[list[str]]:
    """The ``| Metric | Value |`` rows of a dataset report."""
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


def split_rows(r: dict) -> list[list[str]]:
    """One row per split of a dataset report, then the totals, under :data:`SPLIT_HEADER`."""
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


SPLIT_HEADER = [
    "split",
    "records",
    "measurements",
    "tokens",
    "pad tokens",
    "padding",
    "measurements/record (min/mean/max)",
    "sources",
]
