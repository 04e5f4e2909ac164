"""Composite transforms shared by the jobs."""

from __future__ import annotations

import apache_beam as beam


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


def create_spread(pbegin, items, create_label: str, spread_label: str):
    """PBegin -> ``items``, spread over the workers.

    The Reshuffle breaks fusion, so the work on each item runs on many workers instead of where Create
    ran. A function rather than a composite, so the two steps keep the labels the caller gives them.
    """
    return pbegin | create_label >> beam.Create(list(items)) | spread_label >> beam.Reshuffle()
