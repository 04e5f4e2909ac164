"""Dataset reports: a Beam job over raw Parquet rows, and a reader of pretokenized datasets.

``pipeline`` holds the options, the PTransforms and :func:`run`; ``raw`` summarizes Arrow batches,
``dataset`` summarizes ArrayRecord files, ``sketches`` holds the mergeable counters, ``render`` writes
``report.md`` / ``report.html``.
"""

from beam_pipelines.stats.pipeline import run

__all__ = ["run"]
