"""The main job: Parquet measurements -> packed seq_len-token ArrayRecord splits plus a manifest.

``pipeline`` holds the options, the named PTransforms and :func:`run`; ``stages`` the pure work of each
stage (encode a row group, pack a bucket, write records, finalize); ``splitting`` and ``packing`` the
pure functions they call.
"""

from beam_pipelines.pretokenize.pipeline import run

__all__ = ["run"]
