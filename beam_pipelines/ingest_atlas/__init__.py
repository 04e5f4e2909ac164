"""RIPE Atlas ping results (JSON, compressed or not) -> seed-schema Parquet shards plus a manifest.

``pipeline`` holds the options, the PTransforms and :func:`run`; ``convert`` turns one ping result into
rows; ``streams`` reads the input files (decompression, JSON lines or arrays, byte ranges) and writes
fragments and shards.
"""

from beam_pipelines.ingest_atlas.pipeline import run

__all__ = ["run"]
