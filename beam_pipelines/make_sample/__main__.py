"""``python -m beam_pipelines.make_sample``: see :mod:`beam_pipelines.make_sample.shards`."""

import sys

from beam_pipelines.make_sample.shards import run

sys.exit(run())
