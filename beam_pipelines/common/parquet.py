"""Finding, validating and reading Parquet inputs, split by row group.

The seed's dataset is one 1.1 GB file of 100M rows, so work is split by row group, not by file:
every (file, row group) pair is one task, and a task streams its row group in Arrow record batches.
Inputs are validated before any pipeline runs, so a bad input fails fast with one clear message.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.common.errors import InputError
from beam_pipelines.common.files import sha256_file
from tokenizer import REQUIRED_COLUMNS, SchemaError, check_schema

BATCH_ROWS = 1 << 16  # rows per Arrow batch within a task: bounds a worker's memory per element



@dataclasses.dataclass(frozen=True)
class InputFile:
    """One Parquet input file as found at planning time."""

    path: str
    bytes: int
    rows: int
    row_groups: tuple[int, ...]  # rows in each row group
    sha256: str  # of the file's bytes, part of the dataset fingerprint


@dataclasses.dataclass(frozen=True)
class RowGroupTask:
    """One unit of reading work: a row group of one file."""

    file_index: int
    path: str
    row_group: int
    row_offset: int  # index of the row group's first row within its file
    rows: int

    @property
    def task_id(self) -> str:
        return f"{self.file_index:05d}-{self.row_group:05d}"


def expand_pattern(pattern: str) -> list[str]:
    """Sorted files matching ``pattern`` (a path, a directory or a glob; ``**`` recurses)."""
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*.parquet")
    paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not paths:
        raise InputError(f"input {pattern!r} matches no file")
    return paths


def resolve_inputs(pattern: str, required: Sequence[str] = REQUIRED_COLUMNS, fingerprint: bool = True) -> list[InputFile]:
    """Find and validate every input file; raises :class:`InputError` naming the file (and column)."""
    files = []
    for path in expand_pattern(pattern):
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
        schema = meta.schema.to_arrow_schema()
        if tuple(required) == tuple(REQUIRED_COLUMNS):
            try:
                check_schema(schema)
            except SchemaError as exc:
                raise InputError(f"{path}: {exc}") from exc
        else:
            missing = [c for c in required if schema.get_field_index(c) < 0]
            if missing:
                raise InputError(f"{path}: column {missing[0]!r}: missing")
        files.append(
            InputFile(
                path=path,
                bytes=os.path.getsize(path),
                rows=meta.num_rows,
                row_groups=tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups)),
                sha256=sha256_file(path) if fingerprint else "",
            )
        )
    return files


def plan_tasks(files: Sequence[InputFile]) -> list[RowGroupTask]:
    """One task per non-empty row group, in (file, row group) order."""
    tasks = []
    for fi, f in enumerate(files):
        offset = 0
        for rg, rows in enumerate(f.row_groups):
            if rows:
                tasks.append(RowGroupTask(fi, f.path, rg, offset, rows))
            offset += rows
    return tasks


def read_task(task: RowGroupTask, columns: Sequence[str] | None = REQUIRED_COLUMNS) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Stream one row group as ``(row index within the file of the batch's first row, batch)``."""
    try:
        pf = pq.ParquetFile(task.path)
        row = task.row_offset
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[task.row_group], columns=list(columns) if columns else None):
            yield row, batch
            row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{task.path}: row group {task.row_group}: cannot be read ({exc})") from exc


class ReadParquetBatches(beam.PTransform):
    """PBegin -> ``(task, first_row, RecordBatch)`` elements, one task per row group, spread over workers."""

    def __init__(self, tasks: Sequence[RowGroupTask], columns: Sequence[str] | None = REQUIRED_COLUMNS):
        super().__init__()
        self._tasks = list(tasks)
        self._columns = list(columns) if columns else None

    def expand(self, pbegin):
        columns = self._columns
        return (
            pbegin
            | "CreateTasks" >> beam.Create(self._tasks)
            # Break fusion so row groups spread across workers instead of running where Create ran.
            | "SpreadTasks" >> beam.Reshuffle()
            | "ReadRowGroup" >> beam.FlatMap(lambda t: ((t, row, b) for row, b in read_task(t, columns)))
        )
