"""Opening a pretokenized dataset (ArrayRecord files + manifest.json, docs/data-contract.md) for training
and evaluation, at one of its versions.

The dataset is read and checked through ``beam_pipelines.dataset`` (the contract); :func:`open_dataset`
adds the checks against the training config (or, without one, that this code decodes the dataset's
tokenizer). What reads the records is elsewhere: the training stream (:mod:`trainer.train_stream`), the
evaluation batches (:mod:`trainer.eval_stream`), the evaluation's columns (:mod:`trainer.eval.columns`).
"""

from __future__ import annotations

import dataclasses
import os

import beam_pipelines.dataset as contract
from beam_pipelines.common import storage
from beam_pipelines.dataset import DatasetError  # re-exported: trainer.data.DatasetError is the contract's error
from tokenizer import TokenizerMismatch, check_tokenizer
from trainer import staging
from trainer.checksum_cache import ChecksumCache
from trainer.config import Config


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An opened, checked pretokenized dataset, at one of its versions."""

    root: str  # directory holding manifest.json
    manifest: dict  # the manifest of the version read (select_version): its files and counts, its fingerprint
    seq_len: int  # tokens per record
    pad_id: int  # padding id
    version: int = 1  # the dataset version read (versions 1..N of pretokenize --append)
    latest_version: int = 1  # the dataset's latest version when it was opened

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the version read (equal to the dataset's when that is the latest)."""
        return self.manifest["fingerprint"]

    def at_version(self, version: int) -> dict:
        """The manifest of an earlier (or this) version: ``version`` <= :attr:`version`."""
        return contract.select_version(self.manifest, version, root=self.root)

    def split_names(self) -> list[str]:
        return sorted(self.manifest["splits"])

    def files(self, split: str) -> list[str]:
        """Absolute paths of a split's files, in manifest order."""
        return [os.path.join(self.root, f["path"]) for f in self.split_entry(split)["files"]]

    def num_records(self, split: str) -> int:
        return int(self.split_entry(split)["records"])

    def split_entry(self, split: str) -> dict:
        """The manifest's entry of ``split`` (its counts and files); a split that is not there raises
        :class:`DatasetError` naming the splits there are."""
        if split not in self.manifest["splits"]:
            raise DatasetError(f"{self.root}: no split {split!r} (splits: {', '.join(self.split_names())})")
        return self.manifest["splits"][split]


def open_dataset(root: str, config: Config | None = None, *, version: int | None = None,
                 verify_checksums: bool | None = None) -> Dataset:
    """Open ``root`` at one version and check it: the one way training and evaluation open a dataset.

    The version read is ``version`` if given, else ``config.data_version``; None or 0 is the latest. Only
    that version's files are read and checked (the files of versions 1..N,
    :func:`beam_pipelines.dataset.select_version`): a dataset appended to since reads exactly as an
    untouched copy of that version. An unknown version raises ``ManifestError`` naming the versions there
    are (exit code 2). A remote ``root`` (``s3://``, ``gs://``) is first staged into ``config.cache_dir``
    (without a config, the default cache: ``$PING_LLM_CACHE_DIR``, else ``~/.cache/ping-llm``).

    Refuses (with :class:`DatasetError`) what :func:`beam_pipelines.dataset.read_manifest` refuses (no
    manifest, another ``format_version``, an ingest output), and what
    :func:`beam_pipelines.dataset.verify_dataset` refuses: a missing file, a file whose size or record
    count (or, with checksums, sha256) disagrees with the manifest. Sizes and record counts are checked on
    every open (a stat and an index read per file).

    With a training ``config`` (training, and evaluation with a model): also refuses a tokenizer
    name/version, vocab size, pad id or seq_len that disagrees with it, and checks every file's sha256
    when ``verify_checksums`` (default ``config.verify_checksums``), once per dataset and host
    (:class:`~trainer.checksum_cache.ChecksumCache`, unless ``config.checksum_cache`` is off), so it can be
    on by default. Without one (``trainer.evaluate --baselines_only``, ``trainer.eval.tune``): the
    dataset's tokenizer must be one this code decodes, and sha256 is checked only with ``verify_checksums``.
    """
    if version is None:
        version = getattr(config, "data_version", 0)
    version = version or None
    root = staging.local_data_dir(root, config, version)  # an s3:// or gs:// data_dir: a verified local copy (of that version)
    full = contract.read_manifest(root)
    latest = contract.dataset_versions(full)[-1]["version"]
    # The top-level keys are the dataset at its latest version (what readers before versions read); an
    # earlier version is rebuilt from the manifest's versions list: its files, counts and fingerprint.
    manifest = full if version in (None, latest) else contract.select_version(full, version, root=root)
    tok = manifest["tokenizer"]
    if config is None:
        try:  # the one tokenizer check: any scheme this code decodes
            check_tokenizer(tok, manifest["seq_len"])
        except TokenizerMismatch as err:
            raise DatasetError(f"{root}: {err}; this evaluation decodes no such tokenizer") from None
        contract.verify_dataset(root, manifest, checksums=bool(verify_checksums))
    else:
        _check_against_config(root, manifest, config, verify_checksums)
    return Dataset(root=root, manifest=manifest, seq_len=manifest["seq_len"], pad_id=tok["pad_id"],
                   version=version or latest, latest_version=latest)


def _check_against_config(root: str, manifest: dict, config: Config, verify_checksums: bool | None) -> None:
    """The tokenizer check against a training config, then the files (sha256 once per dataset and host)."""
    expected = {
        "name": config.tokenizer,
        "version": config.tokenizer_version,
        "vocab_size": config.model.vocab_size,
        "pad_id": config.pad_id,
    }
    try:  # the one tokenizer check (tokenizer.check_tokenizer)
        check_tokenizer(manifest["tokenizer"], manifest["seq_len"], expected=expected, expected_seq_len=config.seq_len)
    except TokenizerMismatch as err:
        raise DatasetError(f"{root}: {err} (the config has tokenizer={config.tokenizer})") from None
    checksums = config.verify_checksums if verify_checksums is None else verify_checksums
    cache = ChecksumCache() if checksums and config.checksum_cache else None
    if cache is not None and cache.verified(root, manifest):
        checksums = False  # this host already read every byte of these very files; sizes and counts still
    contract.verify_dataset(root, manifest, checksums=checksums)
    if cache is not None and checksums:
        cache.remember(root, manifest)


def read_dataset_manifest(root: str) -> dict:
    """The whole manifest of the dataset at ``root`` (local or ``s3://``/``gs://``, nothing staged), every
    version listed: what a run reads to choose its version before it opens (and stages) that version."""
    if storage.is_remote(root):
        storage.check_location(root)  # a missing bucket or credentials: one clear InputError
    return contract.read_manifest(root)
