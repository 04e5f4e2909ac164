"""report.md: the summary table, value ranges and rejected rows of a raw report."""

from __future__ import annotations

from beam_pipelines.stats import render as stats_render


def test_raw_markdown(raw):
    md = stats_render.render_markdown(raw)
    assert md.startswith("# Ping data report")
    assert "| Metric | Value |" in md and f"| Rows | {raw['rows']:,} |" in md
    assert f"{raw['distinct_msm_id']:,} distinct msm_id" in md
    assert "p50=" in md and "(exact)" in md
    for reason in raw["rejected_by_reason"]:
        assert f"| {reason} |" in md
