"""The work of each pretokenize stage, as plain functions over one task, bucket or the final summary.

The Beam DoFns in :mod:`beam_pipelines.pretokenize` are thin adapters over these, so each stage can be
tested (and reasoned about) without Beam. Temporary files live under the job's scratch location
(``OUT/_tmp``, or a folder under Beam's ``--temp_location``) and have names derived only from task and
bucket ids, so a retried task overwrites its own files and the result does not depend on the runner or
the number of workers.

Output and scratch may be object-store URLs (docs/object-storage.md): every file is then written to a
worker-local temporary file and uploaded through :mod:`beam_pipelines.common.storage` (ArrayRecord files
checked by size and sha256 of what the store holds), records get their final names only at
:func:`finalize`, after every file was verified, and the manifest is written last.

Stages hand each other typed summaries (:class:`EncodeSummary`, :class:`RecordsSummary`): small, frozen
and picklable, so any runner can ship them, and :func:`finalize` tells them apart by type.

The modules, one stage's concern each: :mod:`~beam_pipelines.pretokenize.stages.context` (the job context
and the summaries), :mod:`~beam_pipelines.pretokenize.stages.encode` (read and encode one task),
:mod:`~beam_pipelines.pretokenize.stages.grouping` (group and pack one bucket) and
:mod:`~beam_pipelines.pretokenize.stages.write` (write one bucket's records, then finalize).
"""

from beam_pipelines.pretokenize.stages.context import (
    NOTHING_ENCODED,
    REJECTED_DIR,
    TMP_DIR,
    EncodeSummary,
    JobContext,
    RecordsSummary,
)
from beam_pipelines.pretokenize.stages.encode import encode_task
from beam_pipelines.pretokenize.stages.grouping import pack_bucket
from beam_pipelines.pretokenize.stages.write import (
    REJECTED_FILE_ROWS,
    file_stem,
    finalize,
    gather_rejected,
    plan_rejected_files,
    write_bucket_records,
)

__all__ = [
    "NOTHING_ENCODED",
    "REJECTED_DIR",
    "REJECTED_FILE_ROWS",
    "TMP_DIR",
    "EncodeSummary",
    "JobContext",
    "RecordsSummary",
    "encode_task",
    "file_stem",
    "finalize",
    "gather_rejected",
    "pack_bucket",
    "plan_rejected_files",
    "write_bucket_records",
]
