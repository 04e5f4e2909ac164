"""The main job: Parquet measurements -> packed seq_len-token ArrayRecord splits plus a manifest.

``pipeline`` runs the job (:func:`run`); ``options`` parses its options, ``planning`` plans a run and
``append`` prepares ``--append``'s; ``transforms`` the
named PTransforms (Beam); ``local`` the same stages run in this process without Beam (``--in_process``, for small appends);
``stages`` the pure work of each stage (encode a row group, pack a bucket, write records, finalize);
``splitting`` and ``packing`` the pure functions they call.
"""

from beam_pipelines.pretokenize.pipeline import run

__all__ = ["run"]
