"""Composite transforms shared by the jobs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam.transforms.ptransform import ptransform_fn

from beam_pipelines.common.parquet import ReadTask, batches_with_offsets
from tokenizer import REQUIRED_COLUMNS


class GatherAll(beam.PTransform):
    """PCollection -> one element: the list of all its elements.

    A GroupByKey under a single key: a barrier after which every upstream element is known. The jobs use
    it for the small summaries that decide file names and manifests, never for data.
    """

    def expand(self, pcoll):
        return (
            pcoll
            | "KeyByOne" >> beam.Map(lambda element: (0, element))
            | "GroupUnderOne" >> beam.GroupByKey()
            | "ToList" >> beam.MapTuple(lambda _, elements: list(elements))
        )


class StageFn(beam.DoFn):
    """The base of a DoFn over a job's stage function: it holds the job's context
    (:class:`~beam_pipelines.common.lifecycle.JobContext`) and sets up each worker process with it."""

    def __init__(self, ctx):
        self._ctx = ctx

    def setup(self):
        self._ctx.prepare_worker()


@ptransform_fn
def WriteManifest(summaries, finalize: Callable, ctx):
    """Every summary -> ``finalize(all summaries, ctx)``, which publishes the output, its manifest last.

    ``summaries`` is a PCollection or a tuple of them (flattened first). The barrier (:class:`GatherAll`)
    runs ``finalize`` once, when every upstream summary is known; as the pipeline's one sink, depending on
    every branch, it is also what a runner that computes only the last transform's graph (the DaskRunner)
    must execute in full.
    """
    if isinstance(summaries, tuple):
        summaries = summaries | "FlattenSummaries" >> beam.Flatten()
    return summaries | "GatherSummaries" >> GatherAll() | "Finalize" >> beam.Map(finalize, ctx)


def create_spread(pbegin, items, create_label: str, spread_label: str):
    """PBegin -> ``items``, spread over the workers.

    The Reshuffle breaks fusion, so the work on each item runs on many workers instead of where Create
    ran. A function rather than a composite, so the two steps keep the labels the caller gives them.
    """
    return pbegin | create_label >> beam.Create(list(items)) | spread_label >> beam.Reshuffle()


class ReadParquetBatches(beam.PTransform):
    """PBegin -> ``(task, rows of the task before this batch, RecordBatch)`` elements, tasks spread over workers."""

    def __init__(self, tasks: Sequence[ReadTask], columns: Sequence[str] | None = REQUIRED_COLUMNS, fs_options: dict | None = None):
        super().__init__()
        self._tasks = list(tasks)
        self._columns = list(columns) if columns else None
        self._fs_options = dict(fs_options or {})  # Beam's filesystem options (S3, GCS) for the workers

    def expand(self, pbegin):
        columns = self._columns
        return (
            pbegin
            | "CreateTasks" >> beam.Create(self._tasks)
            # Break fusion so tasks spread across workers instead of running where Create ran.
            | "SpreadTasks" >> beam.Reshuffle()
            | "ReadTask" >> beam.FlatMap(batches_with_offsets, columns, self._fs_options)
        )
