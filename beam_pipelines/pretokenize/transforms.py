"""The pretokenize pipeline's Beam stages: thin DoFns over :mod:`beam_pipelines.pretokenize.stages` and the
named composite transforms (ReadAndEncode -> GroupBySource -> PackRecords -> WriteArrayRecords ->
WriteManifest), attached by :func:`build_pipeline`.

Kept apart from ``pipeline.py`` (options, planning, :func:`~beam_pipelines.pretokenize.pipeline.run`) so
that a job run with ``--in_process``, which calls the same stage functions in this process without Beam
(:mod:`beam_pipelines.pretokenize.local`), does not pay Beam's import (about 0.7 s).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.ptransform import ptransform_fn

from beam_pipelines.common.transforms import StageFn, WriteManifest, create_spread
from beam_pipelines.pretokenize import stages


class _EncodeTaskFn(StageFn):
    def __init__(self, ctx: stages.JobContext):
        super().__init__(ctx)
        self._rows = Metrics.counter("pretokenize", "rows_read")
        self._accepted = Metrics.counter("pretokenize", "rows_accepted")
        self._rejected = Metrics.counter("pretokenize", "rows_rejected")

    def process(self, task):
        summary = stages.encode_task(task, self._ctx)
        self._rows.inc(summary.rows)
        self._accepted.inc(summary.accepted)
        self._rejected.inc(summary.rows - summary.accepted)
        yield summary


class _PackBucketFn(StageFn):
    def __init__(self, ctx: stages.JobContext):
        super().__init__(ctx)
        self._measurements = Metrics.counter("pretokenize", "measurements_packed")

    def process(self, element):
        bucket, paths = element
        for split, result in stages.pack_bucket(bucket, list(paths), self._ctx):
            self._measurements.inc(result.measurements)
            yield bucket, split, result


class _WriteRecordsFn(StageFn):
    def __init__(self, ctx: stages.JobContext):
        super().__init__(ctx)
        self._records = Metrics.counter("pretokenize", "records_written")
        self._pad = Metrics.counter("pretokenize", "pad_tokens")

    def process(self, element):
        bucket, split, result = element
        summary = stages.write_bucket_records(bucket, split, result, self._ctx)
        self._records.inc(summary.records)
        self._pad.inc(summary.pad_tokens)
        yield summary


@ptransform_fn
def ReadAndEncode(pbegin, tasks, ctx: stages.JobContext):
    """PBegin -> one :class:`~stages.EncodeSummary` per task; accepted rows land in bucket files,
    rejected rows apart."""
    spread = create_spread(pbegin, tasks, "CreateTasks", "SpreadTasks")
    return spread | "EncodeTask" >> beam.ParDo(_EncodeTaskFn(ctx))


@ptransform_fn
def GroupBySource(summaries):
    """Encode summaries -> ``(bucket, [part files])``: a barrier after which a bucket is complete."""
    return (
        summaries
        | "BucketParts" >> beam.FlatMap(lambda s: s.buckets.items())
        | "GroupBucketParts" >> beam.GroupByKey()
    )


@ptransform_fn
def PackRecords(grouped, ctx: stages.JobContext):
    """``(bucket, parts)`` -> ``(bucket, split, PackResult)``: sources in time order, packed per split."""
    return grouped | "PackBucket" >> beam.ParDo(_PackBucketFn(ctx))


@ptransform_fn
def WriteArrayRecords(packed, ctx: stages.JobContext):
    """Packed records -> one verified temporary ArrayRecord file (a :class:`~stages.RecordsSummary`) per
    bucket and split."""
    return packed | "WriteBucketRecords" >> beam.ParDo(_WriteRecordsFn(ctx))


def build_pipeline(pipeline: beam.Pipeline, tasks, ctx: stages.JobContext):
    """Attach the pretokenize stages to ``pipeline``; returns the manifest PCollection."""
    summaries = pipeline | "ReadAndEncode" >> ReadAndEncode(tasks, ctx)
    written = (
        summaries
        | "GroupBySource" >> GroupBySource()
        | "PackRecords" >> PackRecords(ctx)
        | "WriteArrayRecords" >> WriteArrayRecords(ctx)
    )
    # The manifest stage depends on every branch: encode summaries carry the rejected files, record
    # summaries the outputs.
    return (summaries, written) | "WriteManifest" >> WriteManifest(stages.finalize, ctx)


