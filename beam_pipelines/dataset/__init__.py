"""The data contract between the pipeline and its readers (docs/data-contract.md): manifest and records.

* :mod:`~beam_pipelines.dataset.manifest`: the manifest's format; written by pretokenize, read (and
  validated) by :func:`read_manifest`; a dataset's versions (:func:`dataset_versions`) and the manifest of
  one version (:func:`select_version`).
* :mod:`~beam_pipelines.dataset.verify`: the listed files against the manifest (:func:`verify_dataset`).
* :mod:`~beam_pipelines.dataset.records`: the record codec (ArrayRecord files of little-endian uint16).

No Apache Beam here: the trainer, the evaluation and the stats job read datasets through this package.
"""

from beam_pipelines.dataset.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    DatasetError,
    ManifestError,
    dataset_versions,
    read_manifest,
    select_version,
)
from beam_pipelines.dataset.records import decode_record, iter_record_blocks, read_records
from beam_pipelines.dataset.verify import verify_dataset, verify_file

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "DatasetError",
    "ManifestError",
    "dataset_versions",
    "decode_record",
    "iter_record_blocks",
    "read_manifest",
    "read_records",
    "select_version",
    "verify_dataset",
    "verify_file",
]
