"""``python -m beam_pipelines.make_sample``: see :mod:`beam_pipelines.make_sample.shards`."""

from beam_pipelines.common.tricks import exit_now
from beam_pipelines.make_sample.shards import run

exit_now(run())  # the job is done: its exit handlers run, the interpreter's teardown is skipped
