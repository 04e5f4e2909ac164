"""``python -m beam_pipelines.update``: see :mod:`beam_pipelines.update.command`."""

import sys

from beam_pipelines.update.command import run

sys.exit(run())
