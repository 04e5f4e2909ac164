"""report.html: every named plot present as a valid embedded PNG, readable tables, for both report kinds."""

from __future__ import annotations

import base64
import json
import re
import struct

import pytest

from beam_pipelines.stats import pipeline as stats
from beam_pipelines.stats import render as stats_render
from beam_pipelines.stats.raw import Limits, merge_all, raw_report, summarize_batch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def figures_in(page: str) -> dict[str, bytes]:
    """figure id -> PNG bytes, for every <figure id=...><img src=data:image/png;base64,...> in the page."""
    found = re.findall(
        r'<figure id="([^"]+)"><figcaption>[^<]*</figcaption><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">',
        page,
    )
    return {fig_id: base64.b64decode(data, validate=True) for fig_id, data in found}


def check_page(page: str, specs) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    figs = figures_in(page)
    assert list(figs) == [fig_id for fig_id, _ in specs]
    for fig_id, title in specs:
        png = figs[fig_id]
        assert png.startswith(PNG_MAGIC), fig_id
        width, height = struct.unpack(">II", png[16:24])  # IHDR
        assert width >= 300 and height >= 150, fig_id
        assert f"<figcaption>{title}</figcaption>" in page.replace("&amp;", "&")
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_raw_html_has_every_plot(raw):
    check_page(stats_render.render_html(raw), stats_render.RAW_FIGURES)


@pytest.mark.slow
def test_approximate_figures_carry_their_bounds(dirty):
    limits = Limits(distinct=10, quantile=20)
    r = json.loads(
        json.dumps(raw_report(merge_all(summarize_batch(b, limits) for b in dirty.to_batches(1000)), [], "x"))
    )
    md = stats_render.render_markdown(r)
    assert "≈" in md and "± 2.4%" in md  # HyperLogLog distinct counts
    assert "rank error ≤" in md  # quantiles from bins
    check_page(stats_render.render_html(r), stats_render.RAW_FIGURES)


def test_dataset_html_and_markdown(hand_dataset, tmp_path):
    assert stats.run(["--dataset", hand_dataset, "--output", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    check_page(page, stats_render.DATASET_FIGURES)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Pretokenized dataset report") and "| Records |" in md and "| total |" in md


def test_empty_report_renders(tmp_path, dirty):
    r = json.loads(json.dumps(raw_report(merge_all([]), [], "none")))
    check_page(stats_render.render_html(r), stats_render.RAW_FIGURES)
    assert "| Rows | 0 |" in stats_render.render_markdown(r)
