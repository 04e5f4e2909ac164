"""``python -m beam_pipelines.update``: see :mod:`beam_pipelines.update.command`."""

from beam_pipelines.common.tricks import exit_now
from beam_pipelines.update.command import run

exit_now(run())  # the job is done: its exit handlers run, the interpreter's teardown is skipped
