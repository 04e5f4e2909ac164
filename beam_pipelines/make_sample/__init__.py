"""The bundled sample's generator: ``synth`` makes seed-like rows, ``shards`` writes them as Parquet."""

from beam_pipelines.make_sample.shards import run, write_shards

__all__ = ["run", "write_shards"]
