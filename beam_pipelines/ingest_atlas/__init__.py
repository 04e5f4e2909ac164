"""RIPE Atlas ping results (JSON, compressed or not) -> seed-schema Parquet shards plus a manifest.

``pipeline`` holds the options, the PTransforms and :func:`run`; ``convert`` turns one ping result into
rows; ``streams`` finds the input files and reads each work unit (decompression, JSON lines or arrays,
byte ranges) into Arrow fragments; ``shards`` cuts the fragments into Parquet shards and writes the
manifest.
"""

from beam_pipelines.ingest_atlas.pipeline import run

__all__ = ["run"]
