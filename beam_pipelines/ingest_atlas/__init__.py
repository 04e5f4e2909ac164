"""RIPE Atlas ping results (JSON, compressed or not) -> seed-schema Parquet shards plus a manifest.

``pipeline`` holds the options, the PTransforms and :func:`run`; ``discovery`` finds and hashes the
input files and plans the work units (whole files or byte ranges); ``read_unit`` reads one work unit
into Arrow fragments (``fragments``), through ``decompress`` (gzip, xz, bz2 on every core), ``lines``
(JSON lines) or ``json_array`` (an API download), and ``convert``, which turns one ping result into
rows; ``shards`` cuts the fragments into Parquet shards and writes the manifest; ``append`` plans
``--append``.
"""

from beam_pipelines.ingest_atlas.pipeline import run

__all__ = ["run"]
