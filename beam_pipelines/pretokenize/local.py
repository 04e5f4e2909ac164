"""Running the pretokenize stages in this process, without Beam (``--in_process``), for a small input.

An hourly append encodes a small share of the rows of a rebuild, and with Beam most of its time would be
fixed cost: importing Beam (about 0.7 s on the 2-core development machine), the runner's set-up per
bundle (about 0.7 s more in the DirectRunner's one-process mode), and in multi-process mode starting the
worker processes (2-3 s). :func:`run_stages` calls the
very functions the Beam stages call (:mod:`beam_pipelines.pretokenize.stages`), in the order the
pipeline's data flow imposes: every task encoded, then each bucket grouped and packed, each (bucket,
split) written, and :func:`~beam_pipelines.pretokenize.stages.finalize` last. The stages name their
files by task and bucket and finalize orders what it gathers, so the output is byte-identical to the
pipeline's (tests compare them). The job takes this path only when asked (``--in_process``; the hourly
update asks for it when it appends fewer than ``SMALL_INPUT_ROWS`` rows); the default runner stays the
DirectRunner. Written by hand because no Beam runner runs a pipeline without importing Beam.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from beam_pipelines.common.parquet import ReadTask
from beam_pipelines.pretokenize import stages


def run_stages(tasks: Sequence[ReadTask], ctx: stages.JobContext) -> dict | None:
    """Encode, group, pack and write every task of ``tasks``, then finalize; returns finalize's result."""
    ctx.prepare_worker()
    encoded = [stages.encode_task(task, ctx) for task in tasks]
    parts: dict[int, list[str]] = defaultdict(list)  # bucket -> its part files (GroupBySource)
    for summary in encoded:
        for bucket, path in summary.buckets.items():
            parts[bucket].append(path)
    written = [
        stages.write_bucket_records(bucket, split, result, ctx)
        for bucket in sorted(parts)
        for split, result in stages.pack_bucket(bucket, parts[bucket], ctx)
    ]
    return stages.finalize([*encoded, *written], ctx)
