"""The hourly update: new RIPE Atlas dump files -> ``ingest_atlas --append`` -> ``pretokenize --append``.

``command`` holds the options and :func:`run`; the work is done by the two jobs' own ``run`` functions.
"""

from beam_pipelines.update.command import run

__all__ = ["run"]
