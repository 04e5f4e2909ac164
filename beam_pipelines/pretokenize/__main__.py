"""``python -m beam_pipelines.pretokenize``: see :mod:`beam_pipelines.pretokenize.pipeline`."""

import sys

from beam_pipelines.pretokenize.pipeline import run

sys.exit(run())
