"""What the pretokenize stages share: the job's context (:class:`JobContext`) and the typed summaries they
hand each other (:class:`EncodeSummary`, :class:`RecordsSummary`): small, frozen and picklable, so any
runner can ship them, and :func:`~beam_pipelines.pretokenize.stages.write.finalize` tells them apart by
type.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

from beam_pipelines.common import lifecycle, storage
from beam_pipelines.common.progress import write_marker
from beam_pipelines.common.tricks import keep_freed_memory
from tokenizer import get_scheme

TMP_DIR = "_tmp"
REJECTED_DIR = "rejected"
NOTHING_ENCODED = "nothing_encoded.json"  # in the scratch folder: finalize found no accepted row (see finalize)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobContext(lifecycle.JobContext):
    """Everything a pretokenize worker needs to know about the job (small and picklable); the fields every
    job shares (output, scratch, storage options, version) are :class:`~beam_pipelines.common.lifecycle.JobContext`'s."""

    TMP_DIR: ClassVar[str] = TMP_DIR

    seq_len: int
    fractions: tuple[float, float, float]
    split_by: str  # "src" or "time"
    cut_points: tuple[int, ...]  # time mode only
    num_buckets: int
    compression: str
    tmp_compression: str  # Arrow IPC compression of the bucket files: none, lz4 or zstd
    inputs: tuple[dict, ...]  # path, bytes, rows, sha256 per input file
    options: dict  # the options that shape the output (recorded in the manifest)
    fingerprint: str
    tokenizer: str = "v1"  # the tokenizer scheme's name (tokenizer.get_scheme)

    @property
    def scheme(self):
        return get_scheme(self.tokenizer)

    def bucket_dir(self, bucket: int) -> str:
        return os.path.join(self.tmp, "buckets", f"{bucket:05d}")

    def prepare_worker(self) -> None:
        """Set up the process that runs a stage: the job's storage options, and freed array memory kept
        for the next batch (:func:`beam_pipelines.common.tricks.keep_freed_memory`)."""
        super().prepare_worker()
        keep_freed_memory()

    def progress(self, name: str, payload: dict) -> None:
        """Leave a small marker that the launcher's progress display polls (works on any shared FS)."""
        directory = os.path.join(self.tmp, "progress")
        storage.makedirs(directory)
        write_marker(directory, name, **payload)


@dataclasses.dataclass(frozen=True)
class EncodeSummary:
    """What encoding one task (consecutive row groups, see :class:`~beam_pipelines.common.parquet.ReadTask`) read and wrote."""

    task: str  # the task id; finalize orders summaries by it
    file_index: int  # the input file of the task's first row
    rows: int
    accepted: int
    rejected: dict[str, int]  # rejected rows by reason, sorted by reason
    buckets: dict[int, str]  # bucket -> this task's part file of accepted rows
    rejected_file: str | None  # scratch Parquet file of this task's rejected rows (None: none)

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())


@dataclasses.dataclass(frozen=True)
class RecordsSummary:
    """One bucket's records of one split, in a verified temporary ArrayRecord file."""

    bucket: int
    split: str
    tmp_path: str
    records: int
    bytes: int
    sha256: str
    measurements: int
    tokens: int  # non-PAD tokens
    pad_tokens: int
    sources: int
    continuous: int  # measurements whose predecessor in the record is of the same source
