"""``python -m beam_pipelines.pretokenize``: see :mod:`beam_pipelines.pretokenize.pipeline`."""

from beam_pipelines.common.tricks import exit_now
from beam_pipelines.pretokenize.pipeline import run

exit_now(run())  # the job is done: its exit handlers run, the interpreter's teardown is skipped
