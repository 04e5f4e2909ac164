"""What one work unit writes and reports: its Arrow fragment files and its summary. No Beam here.

A work unit's rows (and its rejected lines) go in Arrow record batches straight to an Arrow IPC
*fragment* file, so a worker holds one batch at a time and the runner only ever sees a small
:class:`UnitSummary`. Once every unit is done, :mod:`beam_pipelines.ingest_atlas.shards` cuts the
fragments into Parquet shards.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import pyarrow as pa

from beam_pipelines.common import storage

COUNT_FIELDS = ("lines", "blank_lines", "records", "converted", "rows", "without_rows")  # plain counts of a unit


@dataclasses.dataclass
class UnitCounts:
    """What one work unit read. ``records`` = ``converted`` + ``skipped`` + ``rejected`` (JSON values seen)."""

    lines: int = 0  # physical lines (JSON lines) or values (JSON array) read
    blank_lines: int = 0
    records: int = 0
    converted: int = 0  # ping results that became rows
    rows: int = 0
    without_rows: int = 0  # converted results that gave no row (--rtt each and an empty `result` list)
    rejected: Counter = dataclasses.field(default_factory=Counter)
    skipped: Counter = dataclasses.field(default_factory=Counter)
    progress_lines: int = 0  # lines read so far, updated once per chunk while reading

    def totals(self) -> dict:
        """The finished counts, as :class:`UnitSummary` fields (reasons and types sorted)."""
        return {
            **{name: getattr(self, name) for name in COUNT_FIELDS},
            "rejected": dict(sorted(self.rejected.items())),
            "skipped": dict(sorted(self.skipped.items())),
        }


@dataclasses.dataclass(frozen=True)
class Fragment:
    """An Arrow IPC file of one work unit's rows (or rejected lines), in input order."""

    path: str
    batches: tuple[int, ...]  # rows in each record batch, in order

    @property
    def rows(self) -> int:
        return sum(self.batches)


@dataclasses.dataclass(frozen=True)
class UnitSummary:
    """What one work unit read and wrote. ``records`` = ``converted`` + skipped + rejected."""

    unit: str  # the unit's id, ``FILE-RANGE``
    file_index: int
    range_index: int
    path: str
    bytes_read: int
    lines: int
    blank_lines: int
    records: int
    converted: int
    rows: int
    without_rows: int
    rejected: dict[str, int]  # rejected lines by reason, sorted by reason
    skipped: dict[str, int]  # skipped results by type, sorted by type
    rows_fragment: Fragment | None  # None: the unit gave no row
    rejected_fragment: Fragment | None  # None: no line was rejected

    def fragment(self, kind: str) -> Fragment | None:
        """The fragment of ``kind``: ``"rows"`` or ``"rejected"``."""
        return {"rows": self.rows_fragment, "rejected": self.rejected_fragment}[kind]


class FragmentWriter:
    """Arrow IPC file written under a temporary name and renamed on close; nothing is created for no rows.

    A ``path`` in an object store is written in ``local_dir`` (this worker's disk) and uploaded on close.
    """

    def __init__(self, path: str, schema: pa.Schema, local_dir: str | None = None):
        self.path, self._schema = path, schema
        self._local = os.path.join(local_dir, os.path.basename(path)) if local_dir else None
        self._writer = None
        self._batches: list[int] = []

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None:
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self._writer = pa.ipc.new_file((self._local or self.path) + ".tmp", self._schema, options=options)
        self._writer.write_batch(batch)
        self._batches.append(batch.num_rows)

    def close(self) -> Fragment | None:
        if self._writer is None:
            return None
        self._writer.close()
        if self._local:
            storage.upload(self._local + ".tmp", self.path, verify_sha256=False)
        else:
            os.replace(self.path + ".tmp", self.path)
        return Fragment(self.path, tuple(self._batches))
