"""Grain input pipeline over a pretokenized dataset (ArrayRecord files + manifest.json, docs/data-contract.md).

The dataset is read and checked through ``beam_pipelines.dataset`` (the contract); this module adds the
checks against the training config and the Grain stream.

Training stream, per host (one Grain element per chunk of K batches; no stage works record by record)::

    MapDataset.range(...).repeat()                    # element e is chunk c0 + e of an endless stream
      .map_with_index(read_batch)                     # read positions of the chunk -> keys of this host's part
                                                      #   (a numpy permutation per epoch) -> one batched
                                                      #   ArrayRecord read per file -> (K*B, L) uint16
      .map(augment)                                   # counter-based field-order augmentation (hash-v1)
      .to_iter_dataset(ReadOptions(...))              # prefetch threads
      .mp_prefetch(...)                               # worker processes (num_workers; -1: one per core)
    TrainIterator                                     # in the training process: the chunk's K batches one at
                                                      #   a time, with shift and loss weights

Every stage is a function of the batch index, so the iterator's whole state is the next batch index,
whatever the number of workers, and resuming from it replays exactly the same batches. A dataset is
opened at one version (``config.data_version``; a resumed run's is its checkpoint's) and reads that
version's files only; a run moved to a newer version reads its stream in :class:`Segment` s. A chunk of K
batches (about :data:`CHUNK_RECORDS` records) per Grain element spreads Grain's fixed cost per element
(queues, a shared-memory block, the interleave threads; about 0.3 ms) over more records.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordReader

import beam_pipelines.dataset as contract
from beam_pipelines.common.cores import usable_cores
from beam_pipelines.common.errors import RunError
from beam_pipelines.common.files import atomic_path
from beam_pipelines.common.hashing import MASK64, splitmix64
from beam_pipelines.dataset import DatasetError  # re-exported: trainer.data.DatasetError is the contract's error
from tokenizer import TokenizerMismatch, check_tokenizer, get_scheme
from trainer import augment, staging
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
        return [os.path.join(self.root, f["path"]) for f in self._split(split)["files"]]

    def num_records(self, split: str) -> int:
        return int(self._split(split)["records"])

    def _split(self, split: str) -> dict:
        if split not in self.manifest["splits"]:
            raise DatasetError(f"{self.root}: no split {split!r} (splits: {', '.join(self.split_names())})")
        return self.manifest["splits"][split]


def open_dataset(root: str, config: Config, *, verify_checksums: bool | None = None) -> Dataset:
    """Open ``root`` at version ``config.data_version`` (0: the latest) and check it against ``config``.

    Only that version's files are read and checked (the files of versions 1..N,
    :func:`beam_pipelines.dataset.select_version`): a dataset appended to since reads exactly as an
    untouched copy of that version. An unknown version raises ``ManifestError`` naming the versions there
    are (exit code 2).

    Refuses (with :class:`DatasetError`) what :func:`beam_pipelines.dataset.read_manifest` refuses (no
    manifest, another ``format_version``, an ingest output), a tokenizer name/version, vocab size, pad id
    or seq_len that disagrees with the config, and what :func:`beam_pipelines.dataset.verify_dataset`
    refuses: a missing file, a file whose size or record count (or, with ``verify_checksums``, sha256)
    disagrees with the manifest. Sizes and record counts are checked on every start (a stat and an index
    read per file); the sha256 of every file once per dataset and host (:class:`ChecksumCache`, unless
    ``checksum_cache`` is off), so it can be on by default.
    """
    version = getattr(config, "data_version", 0) or None
    root = staging.local_data_dir(root, config)  # an s3:// or gs:// data_dir: a verified local copy (of that version)
    full = contract.read_manifest(root)
    latest = contract.dataset_versions(full)[-1]["version"]
    # The top-level keys are the dataset at its latest version (what readers before versions read); an
    # earlier version is rebuilt from the manifest's versions list: its files, counts and fingerprint.
    manifest = full if version in (None, latest) else contract.select_version(full, version, root=root)
    tok = manifest["tokenizer"]
    expected = {
        "name": config.tokenizer,
        "version": config.tokenizer_version,
        "vocab_size": config.model.vocab_size,
        "pad_id": config.pad_id,
    }
    try:  # the one tokenizer check (tokenizer.check_tokenizer)
        check_tokenizer(tok, manifest["seq_len"], expected=expected, expected_seq_len=config.seq_len)
    except TokenizerMismatch as err:
        raise DatasetError(f"{root}: {err} (the config has tokenizer={config.tokenizer})") from None
    checksums = config.verify_checksums if verify_checksums is None else verify_checksums
    cache = ChecksumCache() if checksums and config.checksum_cache else None
    if cache is not None and cache.verified(root, manifest):
        checksums = False  # this host already read every byte of these very files; sizes and counts still
    contract.verify_dataset(root, manifest, checksums=checksums)
    if cache is not None and checksums:
        cache.remember(root, manifest)
    return Dataset(root=root, manifest=manifest, seq_len=manifest["seq_len"], pad_id=tok["pad_id"],
                   version=version or latest, latest_version=latest)


def read_dataset_manifest(root: str) -> dict:
    """The whole manifest of the dataset at ``root`` (local or ``s3://``/``gs://``, nothing staged), every
    version listed: what a run reads to choose its version before it opens (and stages) that version."""
    from beam_pipelines.common import storage

    if storage.is_remote(root):
        storage.check_location(root)  # a missing bucket or credentials: one clear InputError
    return contract.read_manifest(root)


class ChecksumCache:
    """Datasets whose sha256 check passed on this host, so that the check runs once per dataset and host.

    One small JSON file (``$PING_LLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ping-llm``, else
    ``~/.cache/ping-llm``; ``verified-datasets.json``) maps the dataset's real path and fingerprint to
    every file's size and modification time when it was checked: a file written since (a flipped
    byte changes its mtime) is checked again. An unwritable cache only means checking every time.
    """

    FILE = "verified-datasets.json"
    KEEP = 64  # entries kept (newest)

    def __init__(self, directory: str | None = None):
        if directory is None:
            directory = os.environ.get("PING_LLM_CACHE_DIR") or os.path.join(
                os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ping-llm"
            )
        self.path = os.path.join(directory, self.FILE)

    @staticmethod
    def _key(root: str, manifest: dict) -> str:
        return f"{os.path.realpath(root)}|{manifest['fingerprint']}"

    @staticmethod
    def _stamp(root: str, manifest: dict) -> list | None:
        stamp = []
        for split in sorted(manifest["splits"]):
            for entry in manifest["splits"][split]["files"]:
                try:
                    st = os.stat(os.path.join(root, entry["path"]))
                except OSError:
                    return None
                stamp.append([entry["path"], entry["sha256"], st.st_size, st.st_mtime_ns])
        return stamp

    def _load(self) -> dict:
        try:
            with open(self.path) as f:
                entries = json.load(f)
            return entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            return {}

    def verified(self, root: str, manifest: dict) -> bool:
        """Whether these files, unchanged since, passed the sha256 check on this host."""
        stamp = self._stamp(root, manifest)
        return stamp is not None and self._load().get(self._key(root, manifest), {}).get("files") == stamp

    def remember(self, root: str, manifest: dict) -> None:
        """Record that the files passed (best effort)."""
        stamp = self._stamp(root, manifest)
        if stamp is None:
            return
        entries = self._load()
        entries.pop(self._key(root, manifest), None)
        entries[self._key(root, manifest)] = {"files": stamp, "checked": time.time()}
        entries = dict(list(entries.items())[-self.KEEP :])
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with atomic_path(self.path) as tmp, open(tmp, "w") as f:
                json.dump(entries, f)
        except OSError:
            pass


def parse_record(raw: bytes, seq_len: int) -> np.ndarray:
    """One ArrayRecord record -> (seq_len,) uint16 token ids (:func:`beam_pipelines.dataset.decode_record`)."""
    return contract.decode_record(raw, seq_len)


def make_example(tokens: np.ndarray, pad_id: int, *, kinds: bool = False, scheme=None) -> dict[str, np.ndarray]:
    """(B, L) tokens -> inputs, targets (inputs shifted left by one), loss weights (0 where the target is PAD).

    Sequences keep length L: the last position's target is PAD (weight 0), so shapes stay powers of two.
    With ``kinds``, also the field kind of every target (``augment.KIND_NAMES``; -1 for PAD) under the
    tokenizer ``scheme`` (None: v1).
    """
    tokens = np.asarray(tokens)
    inputs = tokens.astype(np.int32)  # (B, L)
    targets = np.empty_like(inputs)  # (B, L)
    targets[:, :-1] = inputs[:, 1:]
    targets[:, -1] = pad_id
    weights = np.empty(tokens.shape, np.float32)  # (B, L) written once: this runs in the training process
    np.not_equal(tokens[:, 1:], pad_id, out=weights[:, :-1])
    weights[:, -1] = 0.0  # the last target is PAD
    out = {"inputs": inputs, "targets": targets, "weights": weights}
    if kinds:
        k = augment.field_kinds(tokens, scheme)  # (B, L) kinds of the inputs
        out["kinds"] = np.concatenate([k[:, 1:], np.full((len(k), 1), augment.KIND_PAD, np.int8)], axis=1)  # (B, L)
    return out


def epoch_permutation(n: int, seed: int, epoch: int, segment: int = 0) -> np.ndarray:
    """The order of this host's ``n`` record keys in ``epoch``: a permutation drawn by numpy's PCG64
    Generator seeded with ``(splitmix64(seed), epoch)`` (uint32 when it fits: 4 bytes a record, per process).
    Segment ``k > 0`` of a run moved to a newer dataset version (:class:`Segment`) seeds it with
    ``(splitmix64(seed), epoch, k)``: orders of its own, while segment 0 keeps the run's first orders."""
    entropy = [splitmix64(int(seed) & MASK64), int(epoch)] + ([int(segment)] if segment else [])
    rng = np.random.default_rng(entropy)
    return rng.permutation(np.arange(n, dtype=np.uint32 if n < 2**32 else np.int64))


def shuffled_keys(positions: np.ndarray, n: int, seed: int, cache: dict | None = None, segment: int = 0) -> np.ndarray:
    """The record keys read at stream ``positions`` (a global shuffle, a new order each epoch): read
    position ``r`` is key ``epoch_permutation(n, seed, r // n, segment)[r % n]``. ``cache`` keeps the last
    two epochs' permutations, so a batch costs one gather."""
    positions = np.asarray(positions, dtype=np.int64)  # (B,)
    epoch, x = np.divmod(positions, n)  # (B,), (B,)
    cache = {} if cache is None else cache
    out = np.empty(len(positions), np.int64)
    for e in np.unique(epoch).tolist():
        if e not in cache:
            for old in sorted(cache)[:-1]:  # keep at most two
                del cache[old]
            cache[e] = epoch_permutation(n, seed, e, segment)
        sel = epoch == e
        out[sel] = cache[e][x[sel]]
    return out


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of a training stream that reads one dataset version: from batch ``start_batch`` on (until
    the next segment's), the ``records`` records of the train split at ``version``.

    A run has one segment (``start_batch`` 0) until ``advance_data_version`` moves it to a newer version at
    step ``s``: a second segment then starts at batch ``s`` and reads epochs over all the newer version's
    records, shuffled afresh (segment ``k``'s epoch ``e`` is ``epoch_permutation(n_k, seed, e, k)``), from
    its own epoch 0. The earlier segments stay in the stream's definition, so its batch ``j`` is still a
    function of ``j`` alone and a resumed run replays it exactly.
    """

    start_batch: int  # the first batch (= training step) of the segment
    version: int  # the dataset version read
    records: int  # the train split's records at that version (all hosts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# readahead_buffer_size:0 is what Grain's random-access source uses: a read fetches only its chunk. In a
# worker process (one per core) a batched read decodes its records in the calling thread (max_parallelism:1):
# ArrayRecord's own thread pool only made a worker compete with the others for the cores.
READER_OPTIONS = "readahead_buffer_size:0"
WORKER_READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:1"
AUGMENT_ROWS = 64  # records augmented together: a chunk's (K*B*L,) int64 index arrays left the cache and the
                   # heap (4.8 page faults and 8 us of system time a record at 256 records; none at 64)


class DataReadError(RunError):
    """A record of a data file could not be read during training (a damaged file); exit code 1."""


def _check_hint(root: str) -> str:
    return (
        f"Check the dataset with `python -m beam_pipelines.stats --dataset {root}`, or start the trainer with "
        "verify_checksums=true checksum_cache=false to compare every file's sha256 with the manifest"
    )


class _ReadBatch:
    """A batch of source keys -> {"tokens": (B, L) uint16, "index": (B,) int64 global read indices}.

    One ``read(positions)`` call per file the batch touches (ArrayRecord's batched read), the bytes
    joined once and viewed as one (B, L) array: no per-record Python work beyond the reader's own list.
    Readers open lazily in whichever process runs this (Grain workers pickle it without them).
    """

    def __init__(self, root: str, files: list[str], counts: list[int], seq_len: int, batch_size: int,
                 process_index: int, process_count: int, seed: int = 0, start: int = 0,
                 options: str = READER_OPTIONS, segments: list[tuple[int, int]] | None = None):
        self.root, self.files, self.seq_len, self.batch_size, self.options = root, files, seq_len, batch_size, options
        self.process_index, self.process_count, self.seed, self.start = process_index, process_count, seed, start
        # Segments of the stream as (first read position, records of the split): by default one, all of
        # ``files``. A later segment's files extend an earlier one's (versions only add files at the end),
        # so every segment's keys index the same ``files``.
        segments = [(0, int(sum(counts)))] if segments is None else [(int(a), int(n)) for a, n in segments]
        if segments[0][0] != 0 or any(b[0] <= a[0] for a, b in itertools.pairwise(segments)):
            raise ValueError(f"segments must start at read position 0 and increase: {segments}")
        if any(n > sum(counts) for _, n in segments):
            raise ValueError(f"a segment has more records than the files hold ({sum(counts)}): {segments}")
        self.seg_starts = np.asarray([a for a, _ in segments], np.int64)  # (segments,) first read positions
        self.seg_local = [(n - n % process_count) // process_count for _, n in segments]  # this host's records
        self.local = self.seg_local[-1]  # this host's records in the current (last) segment
        self.ends = np.cumsum(np.asarray(counts, dtype=np.int64))  # (files,) first key past each file
        self._readers: dict[int, object] = {}
        self._epochs: dict[int, dict[int, np.ndarray]] = {}  # segment -> epoch -> its key permutation (the last two)

    def keys(self, read_index: np.ndarray) -> np.ndarray:
        """This host's record keys at global read positions ``read_index``, segment by segment."""
        read_index = np.asarray(read_index, np.int64)  # (B,)
        if len(self.seg_starts) == 1:
            return shuffled_keys(read_index, self.local, self.seed, self._epochs.setdefault(0, {}))
        seg = np.searchsorted(self.seg_starts, read_index, side="right") - 1  # (B,)
        out = np.empty(len(read_index), np.int64)
        for k in np.unique(seg).tolist():
            sel = seg == k
            out[sel] = shuffled_keys(read_index[sel] - self.seg_starts[k], self.seg_local[k], self.seed,
                                     self._epochs.setdefault(k, {}), segment=k)
        return out

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_readers", "_epochs")}

    def __setstate__(self, state):
        self.__dict__.update(state, _readers={}, _epochs={})

    def _reader(self, f: int):
        if f not in self._readers:
            self._readers[f] = ArrayRecordReader(self.files[f], self.options, file_reader_buffer_size=32768)
        return self._readers[f]

    def _read(self, f: int, positions: np.ndarray) -> bytes:
        try:
            return b"".join(self._reader(f).read(positions.tolist()))
        except Exception as exc:  # the C++ reader raises plain RuntimeError/ValueError (riegeli's message)
            self._readers.pop(f, None)
            raise self._damaged(f, positions, exc) from exc

    def _damaged(self, f: int, positions: np.ndarray, exc: Exception) -> DataReadError:
        """Find which record of the batch fails, reading them one at a time with a fresh reader."""
        bad = int(positions[0])
        try:
            reader = ArrayRecordReader(self.files[f], "readahead_buffer_size:0")
            for p in positions.tolist():
                bad = p
                reader.read([p])
            bad = int(positions[0])
        except Exception as one:  # noqa: BLE001 - this is the record
            exc = one
        return DataReadError(
            f"{self.files[f]}: record {bad} cannot be read ({str(exc).strip().splitlines()[0][:300]}); "
            f"the file is damaged. {_check_hint(self.root)}"
        )

    def __call__(self, element: int, _=None) -> dict:
        """Batch ``start + element`` of the shuffled stream."""
        read_index = (self.start + element) * self.batch_size + np.arange(self.batch_size, dtype=np.int64)  # (B,)
        return self.read(read_index, self.keys(read_index))

    def read(self, read_index: np.ndarray, keys: np.ndarray) -> dict:
        """Records of local ``keys`` -> {"tokens": (B, L) uint16, "index": (B,) global read indices}."""
        keys = np.asarray(keys, dtype=np.int64)  # (B,) local keys of this host
        source_keys = keys * self.process_count + self.process_index  # (B,) keys into the split's records
        file_of = np.searchsorted(self.ends, source_keys, side="right")  # (B,)
        starts = np.concatenate([[0], self.ends[:-1]])  # (files,) first key of each file
        n, width = len(keys), 2 * self.seq_len
        tokens = np.empty((n, self.seq_len), dtype=np.uint16)  # (B, L)
        for f in np.unique(file_of).tolist():
            rows = np.flatnonzero(file_of == f)
            positions = source_keys[rows] - starts[f]
            ascending = np.argsort(positions, kind="stable")  # the file is read front to back
            rows, positions = rows[ascending], positions[ascending]
            raw = self._read(f, positions)
            if len(raw) != len(rows) * width:
                raise DataReadError(
                    f"{self.files[f]}: records of the wrong length (expected {width} bytes each, seq_len "
                    f"{self.seq_len}) among records {positions.tolist()}. {_check_hint(self.root)}"
                )
            tokens[rows] = np.frombuffer(raw, dtype="<u2").reshape(len(rows), self.seq_len)
        return {"tokens": tokens, "index": np.asarray(read_index, np.int64) * self.process_count + self.process_index}


class _Parse:
    """bytes at read index i -> {"tokens", "index"}; ``index`` is global across hosts (evaluation stream)."""

    def __init__(self, seq_len: int, process_index: int, process_count: int):
        self.seq_len, self.process_index, self.process_count = seq_len, process_index, process_count

    def __call__(self, index: int, raw: bytes) -> dict:
        return {
            "tokens": parse_record(raw, self.seq_len),
            "index": np.int64(index * self.process_count + self.process_index),
        }


class _Augment:
    """Batched {"tokens", "index"} -> augmented (B, L) uint16 tokens (what worker processes send back:
    2 bytes a token through shared memory, not the 12 of the model's int32/int32/float32 inputs)."""

    def __init__(self, augment_seed: int | None, tokenizer: str = "v1", eval_share: float = 0.0):
        self.augment_seed, self.tokenizer, self.eval_share = augment_seed, tokenizer, eval_share

    def __call__(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        tokens = batch["tokens"]  # (B, L)
        if self.augment_seed is None:
            return tokens
        out = np.empty_like(tokens)  # (B, L)
        step = AUGMENT_ROWS or len(tokens)
        for a in range(0, len(tokens), step):  # records are independent: a chunk is augmented in slices
            out[a : a + step] = augment.augment_batch(tokens[a : a + step], self.augment_seed, batch["index"][a : a + step],
                                                      get_scheme(self.tokenizer), self.eval_share)
        return out


class _Finish:
    """Batched {"tokens", "index"} -> model inputs, with field-order augmentation when ``seed`` is set."""

    def __init__(self, pad_id: int, augment_seed: int | None, kinds: bool = False, tokenizer: str = "v1"):
        self.pad_id, self.augment_seed, self.kinds, self.tokenizer = pad_id, augment_seed, kinds, tokenizer

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict:
        tokens = batch["tokens"]  # (B, L)
        scheme = get_scheme(self.tokenizer)
        if self.augment_seed is not None:
            tokens = augment.augment_batch(tokens, self.augment_seed, batch["index"], scheme)
        return make_example(tokens, self.pad_id, kinds=self.kinds, scheme=scheme)


def _shard(source, process_index: int, process_count: int) -> grain.MapDataset:
    """This host's part: every ``process_count``-th record, after dropping the remainder so parts are equal."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for {process_count} processes")
    ds = grain.MapDataset.source(source)
    usable = len(ds) - len(ds) % process_count
    return ds[:usable][process_index::process_count]


def train_dataset(
    dataset: Dataset,
    split: str,
    *,
    batch_size: int,
    seed: int,
    augment_fields: bool = True,
    eval_order_share: float = 0.0,
    process_index: int = 0,
    process_count: int = 1,
    start: int = 0,
    in_workers: bool = False,
    segments: list[tuple[int, int]] | None = None,
) -> grain.MapDataset:
    """The infinite training stream of ``batch_size``-record batches for one host, as a ``MapDataset`` of
    augmented (B, L) uint16 token arrays (:func:`make_example` turns one into model inputs); element
    ``e`` is batch ``start + e``. Batch ``j`` of size ``K * B`` holds batches ``K*j .. K*j+K-1`` of size
    ``B``, the same records with the same augmentation. ``in_workers``: read for a worker process
    (:data:`WORKER_READER_OPTIONS`). ``segments``: the stream's segments as (first read position of this
    host, records of ``split``), each reading the first that many records of ``dataset``'s files (a run
    moved to a newer version, :class:`Segment`); default one, all of them."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for {process_count} processes")
    total = dataset.num_records(split) if not segments else segments[-1][1]
    local = (total - total % process_count) // process_count  # equal parts; host p reads keys p, p + hosts, ...
    if local == 0:
        raise DatasetError(f"{dataset.root}: split {split} has no records for host {process_index} of {process_count}")
    # One element per batch: batch j holds read positions j*B .. j*B+B-1, whose keys (the global shuffle)
    # and records (one batched read) are computed together, so no stage works record by record.
    ds = grain.MapDataset.range(max(local // batch_size, 1)).repeat()
    ds = ds.map_with_index(batch_reader(dataset, split, batch_size, seed=seed, process_index=process_index,
                                        process_count=process_count, start=start, in_workers=in_workers,
                                        segments=segments))
    return ds.map(_Augment(seed if augment_fields else None, dataset.manifest["tokenizer"]["name"], eval_order_share))


CHUNK_RECORDS = 256  # records per Grain element (whole batches): Grain's ~0.3 ms per element is ~1 us a record


def chunk_batches(batch_size: int) -> int:
    """Batches per Grain element for ``batch_size``-record batches: enough for about :data:`CHUNK_RECORDS`."""
    return max(1, -(-CHUNK_RECORDS // batch_size))


def train_iterator(
    dataset: Dataset,
    config: Config,
    *,
    process_index: int = 0,
    process_count: int = 1,
    segments: list[Segment] | None = None,
) -> TrainIterator:
    """A resumable iterator of this host's training batches (``config.batch_size // process_count`` records).

    Its ``get_state()`` is a small JSON-able dict (the next batch index); ``set_state`` resumes exactly
    where it was taken, with any number of workers. ``segments``: the versions the stream reads from which
    batch on (a run moved on with ``advance_data_version``); default one segment, ``dataset`` from batch 0.
    The last segment reads ``dataset``; earlier ones the first records of its files (an earlier version's).
    """
    if config.batch_size % process_count:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {process_count} processes")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for {process_count} processes")
    batch_size = config.batch_size // process_count
    chunk = chunk_batches(batch_size)
    positions = None
    if segments:
        if segments[-1].records != dataset.num_records(config.train_split):
            raise ValueError(f"the last segment ({segments[-1]}) is not the dataset's version {dataset.version} "
                             f"({dataset.num_records(config.train_split)} {config.train_split} records)")
        positions = [(sg.start_batch * batch_size, sg.records) for sg in segments]  # read positions of this host

    def stream(first_chunk: int) -> grain.DatasetIterator:
        ds = train_dataset(
            dataset,
            config.train_split,
            batch_size=batch_size * chunk,
            seed=config.seed,
            augment_fields=config.augment,
            eval_order_share=config.eval_order_share,
            process_index=process_index,
            process_count=process_count,
            start=first_chunk,
            in_workers=resolve_workers(config) > 0,
            segments=positions,
        )
        return prefetch(ds, config, chunk).__iter__()

    return TrainIterator(stream, batch_size, chunk, dataset.pad_id)


class TrainIterator:
    """The training batches of one host, from a Grain stream of chunks of ``chunk`` batches.

    The state is ``{"next_batch": N}``; the Grain stream (and its worker processes) starts at the chunk
    holding batch N on the first ``next`` after creation or ``set_state``. Model inputs
    (:func:`make_example`) are built here, one batch at a time.
    """

    def __init__(self, stream, batch_size: int, chunk: int, pad_id: int):
        self._stream, self.batch_size, self.chunk, self.pad_id = stream, batch_size, chunk, pad_id
        self._next = 0  # the next batch's index in the stream
        self._it: grain.DatasetIterator | None = None
        self._tokens: np.ndarray | None = None  # the current chunk's (K * B, L) tokens
        self._row = 0  # the current chunk's next row

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._tokens is None:
            if self._it is None:
                self._it = self._stream(self._next // self.chunk)
                self._row = self._next % self.chunk * self.batch_size  # resuming inside a chunk
            else:
                self._row = 0
            self._tokens = next(self._it)  # (K * B, L) uint16
        # Per batch, not per chunk: arrays of one batch are reused by the allocator; a chunk's (several MB)
        # went back to the kernel and faulted in again (about 3 page faults a record).
        batch = make_example(self._tokens[self._row : self._row + self.batch_size], self.pad_id)
        self._row += self.batch_size
        if self._row == len(self._tokens):
            self._tokens = None
        self._next += 1
        return batch

    def get_state(self) -> dict:
        return {"next_batch": self._next}

    def set_state(self, state: Mapping) -> None:
        """Resume at ``state["next_batch"]``. The states of the first ``hash-v1`` pipeline (one Grain
        element per batch) give the same position: ``next_index`` with threads, and with worker processes
        the sum of every worker's ``next_index`` (workers take batches in turn)."""
        if "next_batch" in state:
            position = state["next_batch"]
        elif "next_index" in state:
            position = state["next_index"]
        elif "iterators_in_use_states" in state:
            position = sum(int(s["next_index"]) for s in state["iterators_in_use_states"])
        else:
            raise ValueError(f"not a training iterator state: {json.dumps(state)[:200]}")
        self.close()
        self._next, self._tokens = int(position), None

    def close(self) -> None:
        """Stop the worker processes, if any (the next ``next`` starts them again, at the next batch)."""
        # The current chunk lives in a shared-memory block that Grain unlinks when the array is freed (in a
        # background thread): freed first, it is gone by the time the workers have stopped, not left to
        # interpreter exit, where the unlink can be dropped and the block reported leaked.
        self._tokens = None
        if self._it is not None:
            if hasattr(self._it, "close"):
                self._it.close()
            self._it = None


PARENT_POLL_S = 0.5  # how often a worker checks that its trainer is alive (a sleeping thread costs nothing)


def _die_with_parent(trainer_pid: int, worker_index: int, worker_count: int) -> None:
    """Grain worker start-up: end this worker when the trainer process ends (a SIGKILLed trainer otherwise
    leaves its workers behind, blocked on a full queue nobody reads).

    A daemon thread checks every :data:`PARENT_POLL_S` that the worker's parent is still the trainer (an
    orphan is adopted by init or a subreaper) and ends the worker otherwise. Not the kernel's
    ``PR_SET_PDEATHSIG``: that fires when the *thread* that started the worker ends, and Grain starts its
    workers from prefetch threads that its ``close()`` joins, so every worker was SIGKILLed at the end of
    every run while it handed a batch over, and the shared-memory blocks it had made leaked
    (multiprocessing's "resource_tracker: There appear to be N leaked shared_memory objects" at exit).
    A trainer killed while the worker started (its imports take seconds on a busy host) is already gone:
    the first check, here, ends the worker at once.
    """
    if os.getppid() != trainer_pid:
        os._exit(0)  # the trainer died while this worker started: nobody will read what it makes

    def watch() -> None:
        while os.getppid() == trainer_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)  # the trainer is gone; its resource tracker removes what this worker leaves in shared memory

    threading.Thread(target=watch, name="ping-llm-trainer-watch", daemon=True).start()


MAX_AUTO_WORKERS = 16  # more processes than this only add memory: one worker reads and augments ~20k records/s


def resolve_workers(config: Config) -> int:
    """Worker processes for ``config.num_workers``: the number given, or with -1 (the default) one per core
    this process may use, at most :data:`MAX_AUTO_WORKERS`."""
    if config.num_workers >= 0:
        return config.num_workers
    return max(1, min(usable_cores(), MAX_AUTO_WORKERS))


def prefetch(ds: grain.MapDataset, config: Config, chunk: int = 1) -> grain.IterDataset:
    """Thread prefetch (``num_workers == 0``) or Grain's multiprocess prefetch (chunks come back through
    shared memory). ``config.prefetch_buffer`` counts batches; an element holds ``chunk`` of them."""
    threads = max(config.num_threads, 1)
    read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(-(-config.prefetch_buffer // chunk), threads))
    it = ds.to_iter_dataset(read)
    workers = resolve_workers(config)
    if workers > 0:
        from absl import flags  # Grain's worker processes read absl flags; outside absl.app nobody parsed them

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2),
            worker_init_fn=functools.partial(_die_with_parent, os.getpid()),
        )
    return it


def batch_reader(dataset: Dataset, split: str, batch_size: int, *, seed: int = 0, process_index: int = 0,
                 process_count: int = 1, start: int = 0, in_workers: bool = False,
                 segments: list[tuple[int, int]] | None = None) -> _ReadBatch:
    """The batched reader of the training stream: ``reader(j)`` is batch ``start + j``'s
    ``{"tokens", "index"}``; ``reader.read(read_index, local_keys)`` reads given records. ``segments``: as
    in :func:`train_dataset`."""
    counts = [int(f["records"]) for f in dataset._split(split)["files"]]
    return _ReadBatch(dataset.root, dataset.files(split), counts, dataset.seq_len, batch_size, process_index,
                      process_count, seed, start, WORKER_READER_OPTIONS if in_workers else READER_OPTIONS,
                      segments=segments)


def eval_batches(
    dataset: Dataset,
    split: str,
    *,
    batch_size: int,
    max_batches: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """This host's part of ``split`` in file order, no augmentation, with field kinds.

    The last batch is filled with all-PAD rows (weight 0) so every batch has the same shape; every
    host yields the same number of batches.
    """
    source = grain.sources.ArrayRecordDataSource(dataset.files(split))
    ds = _shard(source, process_index, process_count)
    n = len(ds)
    if max_batches:
        ds = ds[: max_batches * batch_size]
    ds = ds.map_with_index(_Parse(dataset.seq_len, process_index, process_count))
    ds = ds.batch(batch_size, drop_remainder=False).map(
        _Finish(dataset.pad_id, None, kinds=True, tokenizer=dataset.manifest["tokenizer"]["name"]))
    read = grain.ReadOptions(num_threads=max(num_threads, 1), prefetch_buffer_size=4)
    if n == 0:
        return
    for batch in ds.to_iter_dataset(read):
        short = batch_size - len(batch["inputs"])
        if short:
            fill = {
                "inputs": np.full((short, dataset.seq_len), dataset.pad_id, np.int32),
                "targets": np.full((short, dataset.seq_len), dataset.pad_id, np.int32),
                "weights": np.zeros((short, dataset.seq_len), np.float32),
                "kinds": np.full((short, dataset.seq_len), augment.KIND_PAD, np.int8),
            }
            batch = {k: np.concatenate([v, fill[k]]) for k, v in batch.items()}
        yield batch
