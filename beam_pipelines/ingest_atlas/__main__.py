"""``python -m beam_pipelines.ingest_atlas``: see :mod:`beam_pipelines.ingest_atlas.pipeline`."""

import sys

from beam_pipelines.ingest_atlas.pipeline import run

sys.exit(run())
