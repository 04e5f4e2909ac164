"""``python -m beam_pipelines.stats``: see :mod:`beam_pipelines.stats.pipeline`."""

from beam_pipelines.common.tricks import exit_now
from beam_pipelines.stats.pipeline import run

exit_now(run())  # the job is done: its exit handlers run, the interpreter's teardown is skipped
