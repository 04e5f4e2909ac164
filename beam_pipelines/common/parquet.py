"""Finding, validating and reading Parquet inputs, planned by rows.

The seed's dataset is one 1.1 GB file of 100M rows, while files from streaming writers or
over-partitioned exports come as thousands of small files or row groups. Work is planned by rows:
consecutive row groups (of one file or of consecutive files) are combined into tasks of about
100k-1M rows, so a job's cost follows its rows, not the shape of its input. A task streams its row
groups in Arrow record batches.
Inputs are validated before any pipeline runs, so a bad input fails fast with one clear message.
Inputs may be object-store URLs (``s3://bucket/raw/*.parquet``): files are found, sized, hashed and read
through :mod:`beam_pipelines.common.storage` (fsspec), Parquet from a seekable stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.common import object_store, storage
from beam_pipelines.common.cores import usable_cores
from beam_pipelines.common.errors import InputError
from tokenizer import REQUIRED_COLUMNS, SchemaError, check_schema

BATCH_ROWS = 1 << 16  # rows per Arrow batch within a task: bounds a worker's memory per element
MIN_TASK_ROWS = 100_000  # rows per task at least (unless the input is smaller): a task's fixed cost is a few ms
MAX_TASK_ROWS = 1_000_000  # rows per task at most, unless one row group is larger



@dataclasses.dataclass(frozen=True)
class InputFile:
    """One Parquet input file as found at planning time."""

    path: str
    bytes: int
    rows: int
    row_groups: tuple[int, ...]  # rows in each row group
    sha256: str  # of the file's bytes, part of the dataset fingerprint
    schema: pa.Schema | None = None  # the file's Arrow schema; files of different schemas never share a task


@dataclasses.dataclass(frozen=True)
class Piece:
    """Consecutive row groups of one file: part of a task."""

    file_index: int
    path: str
    row_groups: tuple[int, ...]  # indices of the row groups, in order (empty ones left out)
    row_offset: int  # index of the first row group's first row within its file
    rows: int


@dataclasses.dataclass(frozen=True)
class ReadTask:
    """One unit of reading work: consecutive row groups, possibly of several consecutive files.

    Tasks are planned by rows (:func:`plan_tasks`), so the number of tasks, progress markers and
    per-task scratch files follows the number of rows, not the number of files or row groups.
    """

    index: int  # position in the plan; tasks are in (file, row) order
    pieces: tuple[Piece, ...]

    @property
    def task_id(self) -> str:
        return f"{self.index:05d}"

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.pieces)

    @property
    def file_index(self) -> int:
        """The file of the task's first row."""
        return self.pieces[0].file_index


def expand_pattern(pattern: str) -> list[str]:
    """Sorted files matching ``pattern`` (a path, a directory or a glob; ``**`` recurses; a URL too)."""
    if storage.is_remote(pattern):
        storage.check_location(pattern)  # no bucket, no credentials, access denied: one line naming the URL
        if not any(c in pattern for c in "*?[") and not storage.exists(pattern):
            pattern = storage.join(pattern.rstrip("/"), "*.parquet")  # a "directory" (key prefix)
    elif os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*.parquet")
    paths = storage.glob(pattern)
    if not paths:
        raise InputError(f"input {pattern!r} matches no file")
    return paths


def resolve_inputs(pattern: str, required: Sequence[str] = REQUIRED_COLUMNS, fingerprint: bool = True) -> list[InputFile]:
    """Find and validate every input file; raises :class:`InputError` naming the file (and column)."""
    files = []
    for path in expand_pattern(pattern):
        try:
            with parquet_file(path) as pf:
                meta = pf.metadata
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
                bytes=storage.size(path),
                rows=meta.num_rows,
                row_groups=tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups)),
                sha256="",
                schema=schema,
            )
        )
    if fingerprint and files:
        # Hashing is the launcher's one pass over all the input bytes, before any worker starts: the files
        # are hashed side by side (hashlib releases the GIL on large blocks), not one after another.
        with ThreadPoolExecutor(max_workers=min(len(files), usable_cores())) as pool:
            digests = list(pool.map(storage.sha256, [f.path for f in files]))
        files = [dataclasses.replace(f, sha256=d) for f, d in zip(files, digests)]
    return files


@contextlib.contextmanager
def parquet_file(path: str, read_dictionary: Sequence[str] = ()) -> Iterator[pq.ParquetFile]:
    """An open :class:`pyarrow.parquet.ParquetFile` for a local path (as before) or a URL (a seekable stream
    through :mod:`~beam_pipelines.common.storage`, closed at the end). ``read_dictionary``: columns whose string values
    are read as Arrow dictionaries (see :func:`read_task`)."""
    read_dictionary = list(read_dictionary) or None
    if not storage.is_remote(path):
        yield pq.ParquetFile(path, read_dictionary=read_dictionary)
        return
    with storage.open_read(path) as f:
        yield pq.ParquetFile(f, read_dictionary=read_dictionary)


def target_task_rows(total_rows: int, workers: int | None = None) -> int:
    """Rows per task: about four tasks per worker, between :data:`MIN_TASK_ROWS` and :data:`MAX_TASK_ROWS`.

    Each task costs a fixed few milliseconds (a Beam bundle, a file open, its scratch files), so tasks
    are made large; enough of them keep every worker busy, and the upper bound keeps a task's scratch
    memory bounded.
    """
    workers = max(1, workers or os.cpu_count() or 1)
    return int(min(MAX_TASK_ROWS, max(MIN_TASK_ROWS, -(-total_rows // (4 * workers)))))


def plan_tasks(files: Sequence[InputFile], target_rows: int | None = None, workers: int | None = None) -> list[ReadTask]:
    """Cut the inputs, in (file, row group) order, into tasks of about ``target_rows`` rows.

    Consecutive row groups, of one file or of consecutive files, are combined until a task holds at
    least ``target_rows`` rows (default :func:`target_task_rows` of the input and ``workers``), or would
    exceed it by more than it falls short without the next row group; a row group is never split, so a
    row group larger than the target is a task of its own. Empty row groups
    are skipped. ``target_rows=1`` gives one task per row group. Files of different schemas (say, another
    column type) never share a task, so a task's rows, and its scratch files, have one schema.
    """
    if target_rows is None:
        target_rows = target_task_rows(sum(f.rows for f in files), workers)
    if target_rows < 1:
        raise ValueError("target_rows must be positive")
    tasks: list[ReadTask] = []
    pieces: list[Piece] = []
    rows_in_task = 0
    run: list[int] = []  # consecutive row groups of the current file in the current task
    run_offset = run_rows = 0

    def end_run(fi: int, path: str):
        nonlocal run, run_rows
        if run:
            pieces.append(Piece(fi, path, tuple(run), run_offset, run_rows))
        run, run_rows = [], 0

    def close_task():
        nonlocal pieces, rows_in_task
        if pieces:
            tasks.append(ReadTask(len(tasks), tuple(pieces)))
        pieces, rows_in_task = [], 0

    for fi, f in enumerate(files):
        if pieces and not _same_schema(files[pieces[-1].file_index], f):
            close_task()
        offset = 0
        for rg, rows in enumerate(f.row_groups):
            if rows:
                if rows_in_task and rows_in_task + rows - target_rows > target_rows - rows_in_task:
                    # This row group would take the task further past the target than it now falls short:
                    # close the task before it (tasks of 250k-row groups for a 312k target hold one, not two).
                    end_run(fi, f.path)
                    close_task()
                if not run:
                    run_offset = offset
                run.append(rg)
                run_rows += rows
                rows_in_task += rows
                if rows_in_task >= target_rows:
                    end_run(fi, f.path)
                    close_task()
            offset += rows
        end_run(fi, f.path)
    close_task()
    return tasks


def _same_schema(a: InputFile, b: InputFile) -> bool:
    if a.schema is None or b.schema is None:
        return a.schema is b.schema
    return a.schema.equals(b.schema)


def read_task(
    task: ReadTask, columns: Sequence[str] | None = REQUIRED_COLUMNS, dictionary_columns: Sequence[str] = ()
) -> Iterator[tuple[Piece, int, pa.RecordBatch, pa.Schema]]:
    """Stream one task as ``(piece, row index within the piece's file of the batch's first row, batch,
    the file's Arrow schema as written)``.

    Each piece's row groups are read by one Arrow reader (much cheaper than one per row group when row
    groups are small), so a batch may hold rows of several row groups of one file, never of two files.
    String columns named in ``dictionary_columns`` come as ``dictionary<string>`` arrays built from the
    file's own dictionary pages (no per-row strings; :func:`plain_batch` with the yielded schema restores
    the file's types); columns of other types are read as they are.
    """
    columns = list(columns) if columns else None
    for piece in task.pieces:
        row = piece.row_offset
        try:
            with parquet_file(piece.path, dictionary_columns) as pf:
                schema = pf.schema.to_arrow_schema()  # the types as written, whatever read_dictionary asks
                for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=list(piece.row_groups), columns=columns):
                    yield piece, row, batch, schema
                    row += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            groups = piece.row_groups
            where = f"row group {groups[0]}" if len(groups) == 1 else f"row groups {groups[0]}-{groups[-1]}"
            raise InputError(f"{piece.path}: {where}: cannot be read ({exc})") from exc


def plain_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with each column cast back to its type in ``schema`` (its names, nullability and metadata
    kept): the rows as the file holds them, for a batch read with ``dictionary_columns`` (:func:`read_task`)."""
    fields = [f.with_type(schema.field(f.name).type) for f in batch.schema]
    columns = [col if col.type == f.type else col.cast(f.type) for col, f in zip(batch.columns, fields)]
    return pa.record_batch(columns, schema=pa.schema(fields, metadata=batch.schema.metadata))


def batches_with_offsets(task: ReadTask, columns, fs_options=None) -> Iterator[tuple[ReadTask, int, pa.RecordBatch]]:
    """``task``'s record batches, each as ``(task, rows of the task before it, batch)`` (what
    :class:`~beam_pipelines.common.transforms.ReadParquetBatches` emits)."""
    if fs_options:
        object_store.configure(fs_options)  # a worker that did not get the pipeline's options (Dask)
    done = 0
    for _, _, batch, _ in read_task(task, columns):
        yield task, done, batch
        done += batch.num_rows

