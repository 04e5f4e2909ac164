"""The training stream's reader: a batch of read positions -> this host's shuffled record keys -> one
batched ArrayRecord read per file the batch touches -> (B, L) uint16 tokens.

A record that cannot be read (a damaged file) is a :class:`DataReadError` naming the file and record.
"""

from __future__ import annotations

import itertools

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader

from beam_pipelines.common.errors import RunError
from trainer.data import Dataset
from trainer.shuffle import shuffled_keys

# readahead_buffer_size:0 is what Grain's random-access source uses: a read fetches only its chunk. In a
# worker process (one per core) a batched read decodes its records in the calling thread (max_parallelism:1):
# ArrayRecord's own thread pool only made a worker compete with the others for the cores.
READER_OPTIONS = "readahead_buffer_size:0"
WORKER_READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:1"


class DataReadError(RunError):
    """A record of a data file could not be read during training (a damaged file); exit code 1."""


def _check_hint(root: str) -> str:
    return (
        f"Check the dataset with `python -m beam_pipelines.stats --dataset {root}`, or start the trainer with "
        "verify_checksums=true checksum_cache=false to compare every file's sha256 with the manifest"
    )


class BatchReader:
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


def batch_reader(dataset: Dataset, split: str, batch_size: int, *, seed: int = 0, process_index: int = 0,
                 process_count: int = 1, start: int = 0, in_workers: bool = False,
                 segments: list[tuple[int, int]] | None = None) -> BatchReader:
    """The batched reader of the training stream: ``reader(j)`` is batch ``start + j``'s
    ``{"tokens", "index"}``; ``reader.read(read_index, local_keys)`` reads given records. ``segments``: as
    in :func:`trainer.train_stream.train_dataset`."""
    counts = [int(f["records"]) for f in dataset.split_entry(split)["files"]]
    return BatchReader(dataset.root, dataset.files(split), counts, dataset.seq_len, batch_size, process_index,
                       process_count, seed, start, WORKER_READER_OPTIONS if in_workers else READER_OPTIONS,
                       segments=segments)
