"""A ``data_dir`` in an object store (``s3://``, ``gs://``): staged into a local cache before training.

The trainer reads records by index with ArrayRecord's reader, which reads local files; so
:func:`local_data_dir` copies a remote dataset once into ``cache_dir`` (the config key; default
``$PING_LLM_CACHE_DIR``, else ``~/.cache/ping-llm``), under ``datasets/<fingerprint>/``, checking every
file's size and sha256 against the manifest as it arrives and writing the manifest last. The next run
with the same dataset finds that copy and downloads nothing; a new version of the dataset (another
fingerprint) gets a folder of its own, and a dataset with several versions is staged one version at a
time (``config.data_version``: the files of versions 1..N only). Reading goes through fsspec (s3fs for
``s3://``, gcsfs for ``gs://``; Apache Beam is not imported), configured by the standard environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...; application-default credentials for GCS).
``workdir`` stays local.

``trainer.data.open_dataset`` calls this first, so train, evaluate, tune and predict all accept a remote
``data_dir``. A local ``data_dir`` is used where it is, as before. The work is in
:mod:`beam_pipelines.dataset.staging` (shared with ``stats --dataset``).
"""

from __future__ import annotations

from beam_pipelines.dataset.staging import default_cache_dir, stage_dataset


def local_data_dir(root: str, config, version: int | None = None) -> str:
    """``root`` itself when local; else the verified local copy of the remote dataset (made if needed) at
    ``version``, else ``config.data_version`` (0 or None: the latest): that version's files only, in a
    folder named by that version's fingerprint."""
    if version is None:
        version = getattr(config, "data_version", 0)
    return stage_dataset(root, getattr(config, "cache_dir", "") or None, version=version or None)


__all__ = ["default_cache_dir", "local_data_dir"]
