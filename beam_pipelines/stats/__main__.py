"""``python -m beam_pipelines.stats``: see :mod:`beam_pipelines.stats.pipeline`."""

import sys

from beam_pipelines.stats.pipeline import run

sys.exit(run())
