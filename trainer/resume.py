"""Resuming a run: which dataset version it reads, the stream's segments, and what a checkpoint refuses.

A run's dataset version is chosen before the dataset is opened (a resumed run reads, stages and checks its
checkpoint's version only); the checks of a checkpoint against the config (:func:`check_resumable`) come
after. Each refusal is a :class:`ResumeError`: one ``error:`` line, exit code 2.
"""

from __future__ import annotations

import dataclasses
import sys

from beam_pipelines.common.errors import UsageError
from beam_pipelines.dataset import DatasetError, select_version
from beam_pipelines.dataset import dataset_versions as contract_versions
from trainer import augment
from trainer.config import Config, from_saved, same_architecture
from trainer.data import Dataset
from trainer.train_stream import Segment

# Keys that may change between a run and its resumption without changing what is computed.
RESUME_FREE_KEYS = {
    "workdir", "stop_at", "progress", "log_every", "checkpoint_every", "keep_checkpoints", "async_checkpointing",
    "allow_fingerprint_change", "num_workers", "num_threads", "prefetch_buffer", "verify_checksums", "data_dir",
    "checksum_cache", "cache_dir",
    "eval_every", "eval_batches", "eval_batch_size",
    "data_version", "advance_data_version",  # the version is the checkpoint's; choose_data_version checks these
}


class ResumeError(UsageError):
    """A checkpoint that cannot be resumed with this config or dataset (exit code 2: change one or the workdir)."""



@dataclasses.dataclass(frozen=True)
class DataBinding:
    """The dataset version a run reads, and the versions its stream read before (:class:`trainer.train_stream.Segment`)."""

    version: int  # the version read from now on
    segments: tuple[tuple[int, int], ...]  # (first batch, version) of each segment, oldest first
    moved_from: int | None = None  # the version read before this invocation moved the run on (advance_data_version)


def choose_data_version(config: Config, manifest: dict, saved: dict | None, step: int | None) -> DataBinding:
    """Which version of the dataset (``manifest``: the whole manifest, every version) a run reads.

    A fresh run (``saved`` None) reads ``config.data_version``, 0 meaning the latest. A resumed run reads the
    version recorded in its checkpoint's meta (``saved``), whatever was appended since, provided that
    version's fingerprint is the recorded one; a checkpoint written before versions existed (no
    ``data_version``) reads the version whose fingerprint it recorded (version 1 of a dataset appended to
    since). Otherwise the resume is refused (``ResumeError``), unless ``allow_fingerprint_change``: then
    the run reads ``data_version`` (0: latest) with one segment, as before versions. With
    ``advance_data_version`` a resumed run moves on to ``data_version`` (0: the latest), from batch ``step``
    (the next step) on; never back. A ``data_version`` other than the checkpoint's without it is refused.
    """
    root = config.data_dir
    versions = contract_versions(manifest)
    latest = versions[-1]["version"]
    fingerprints = {v["version"]: v["fingerprint"] for v in versions}
    want = config.data_version or None
    if want is not None and want not in fingerprints:
        select_version(manifest, want, root=root)  # raises ManifestError naming the versions there are
    if saved is None:
        version = want or latest
        return DataBinding(version, ((0, version),))
    recorded, fingerprint = saved.get("data_version"), saved.get("fingerprint")
    if recorded is None:  # written before versions: find the version it was trained on
        recorded = next((v for v, fp in fingerprints.items() if fp == fingerprint), None)
        segments = ((0, recorded),)
    else:
        segments = tuple((int(s["start_batch"]), int(s["version"])) for s in saved.get("data_segments", ())) or (
            (0, recorded),
        )
    if recorded is None or fingerprints.get(recorded) != fingerprint:
        if not config.allow_fingerprint_change:
            now = (f"has no version {recorded}" if recorded is not None and recorded not in fingerprints
                   else f"has fingerprint {fingerprints[recorded]} at version {recorded}" if recorded is not None
                   else "has no version of that fingerprint")
            raise ResumeError(
                f"{config.workdir}: checkpoint {step} was trained on dataset {fingerprint}"
                + (f" (version {saved['data_version']})" if saved.get("data_version") else "")
                + f" but {root} {now} (versions {', '.join(f'{v}: {fp[:12]}' for v, fp in fingerprints.items())}); "
                "pass allow_fingerprint_change=true to resume anyway, or use another workdir"
            )
        version = want or latest
        return DataBinding(version, ((0, version),))
    if config.advance_data_version:
        target = want or latest
        if target < recorded:
            raise ResumeError(
                f"{config.workdir}: checkpoint {step} reads dataset version {recorded}; advance_data_version "
                f"moves a run to a newer version, not back to {target}"
            )
        if target > recorded:
            return DataBinding(target, (*segments, (int(step), target)), moved_from=recorded)
        return DataBinding(recorded, segments)
    if want is not None and want != recorded:
        raise ResumeError(
            f"{config.workdir}: checkpoint {step} reads dataset version {recorded} of {root}, not data_version={want}; "
            f"pass advance_data_version=true to move the run to version {want} from the next step, or "
            "data_version=0 to go on with the checkpoint's"
        )
    return DataBinding(recorded, segments)


def stream_segments(dataset: Dataset, binding: DataBinding, split: str) -> list[Segment]:
    """The binding's segments with each version's record count; checks that every earlier version's files
    are the first files of the version read (the contract: an append only adds files after them)."""
    files = [f["path"] for f in dataset.split_entry(split)["files"]]  # DatasetError naming the splits when missing
    out = []
    for start, version in binding.segments:
        if version == dataset.version:
            out.append(Segment(start, version, dataset.num_records(split)))
            continue
        at = dataset.at_version(version)["splits"].get(split)
        if at is None:
            raise DatasetError(f"{dataset.root}: version {version} has no split {split!r}")
        earlier = [f["path"] for f in at["files"]]
        if files[: len(earlier)] != earlier:
            raise DatasetError(
                f"{dataset.root}: the {split} files of version {version} are not the first files of version "
                f"{dataset.version}; the manifest breaks the data contract (versions only add files)"
            )
        out.append(Segment(start, version, int(at["records"])))
    return out


def check_resumable(config: Config, saved: dict, step: int, workdir: str, *, warn: bool = True) -> None:
    """Refuse (:class:`ResumeError`) to resume checkpoint ``step`` (its meta: ``saved``) with ``config`` when
    it was written with another data-order and augmentation scheme or another model; with ``warn``, print
    a warning naming the other config keys that changed (those outside :data:`RESUME_FREE_KEYS`)."""
    saved_scheme = saved.get("augment_scheme", "per-record shuffle and Generator (before hash-v1)")
    if saved_scheme != augment.AUGMENT_SCHEME:
        raise ResumeError(
            f"{workdir}: checkpoint {step} was written with the data-order and augmentation scheme "
            f"{saved_scheme!r}; this trainer shuffles and draws field orders with {augment.AUGMENT_SCHEME!r}, "
            "so resuming would silently change the data order inside the run. Start a new workdir"
        )
    saved_config = from_saved(saved.get("config", {}))
    if not same_architecture(saved_config.model, config.model):
        raise ResumeError(
            f"{workdir}: checkpoint {step} has model {saved_config.model}, config has {config.model}"
        )
    saved_values = saved_config.to_dict()
    changed = sorted(  # the model was compared above
        k for k, v in config.to_dict().items() if k not in RESUME_FREE_KEYS | {"model"} and saved_values[k] != v
    )
    if changed and warn:
        print(f"warning: resuming with changed config keys {', '.join(changed)}; the data order and "
              "schedule may differ from the run that wrote the checkpoint", file=sys.stderr)
