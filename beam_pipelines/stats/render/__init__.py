"""Human-readable renderings of a stats report: ``report.md`` and a self-contained ``report.html``.

Both are built from the ``report.json`` dictionary alone, so a report can be re-rendered without
re-reading the data. The modules, one concern each:

* :mod:`~beam_pipelines.stats.render.formatting`: numbers as the reports print them (57.7M, 1.5 MB, 50 ms).
* :mod:`~beam_pipelines.stats.render.tables`: the tables both texts show, as rows of cell texts.
* :mod:`~beam_pipelines.stats.render.markdown`: ``report.md`` (:func:`render_markdown`).
* :mod:`~beam_pipelines.stats.render.html_page`: ``report.html`` (:func:`render_html`), every plot embedded
  as a base64 PNG in one ``<figure id=...>`` per id named in :data:`RAW_FIGURES` / :data:`DATASET_FIGURES`.
* :mod:`~beam_pipelines.stats.render.plotting`: matplotlib (Agg backend), loaded only when a page is
  drawn, the plots' style and shared drawing helpers; without matplotlib (the base install)
  :func:`render_html` raises :class:`MissingMatplotlib`.
* :mod:`~beam_pipelines.stats.render.raw_plots` and :mod:`~beam_pipelines.stats.render.dataset_plots`:
  the figures of each report kind.
"""

from beam_pipelines.stats.render.dataset_plots import DATASET_FIGURES
from beam_pipelines.stats.render.formatting import human, ms
from beam_pipelines.stats.render.html_page import render_html
from beam_pipelines.stats.render.markdown import render_markdown
from beam_pipelines.stats.render.plotting import MissingMatplotlib
from beam_pipelines.stats.render.raw_plots import RAW_FIGURES

__all__ = ["DATASET_FIGURES", "RAW_FIGURES", "MissingMatplotlib", "human", "ms", "render_html", "render_markdown"]
