"""``python -m beam_pipelines.ingest_atlas``: see :mod:`beam_pipelines.ingest_atlas.pipeline`."""

from beam_pipelines.common.tricks import exit_now
from beam_pipelines.ingest_atlas.pipeline import run

exit_now(run())  # the job is done: its exit handlers run, the interpreter's teardown is skipped
