"""Per-measurement predictions on disk: what a whole-split evaluation scores, kept out of memory.

Scoring every measurement of the seed's test split (10M) keeps, per predictor, five numbers a measurement:
440 bytes a measurement for the eleven baselines, 4.4 GB, and the report's CSV built in memory doubled it.
:class:`SpilledPredictions` appends each block's predictions to one file per (predictor, field) and hands a
predictor back as a :class:`~trainer.eval.baselines.Prediction` whose arrays are read-only memory maps of
those files, made fresh on every access: a consumer that takes one predictor at a time (the metrics, the
plot, the CSV writer a slice at a time) holds one predictor's pages at most, and lets them go when it drops
the arrays. The values are the ones computed, byte for byte (float64 and int64 as the predictors give them).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import tempfile

import numpy as np

from trainer.eval import baselines as bl

_FIELDS = tuple((f.name, np.int64 if f.name == "level" else np.float64) for f in dataclasses.fields(bl.Prediction))


class SpilledPredictions(collections.abc.Mapping):
    """``name -> Prediction`` for predictions appended block by block (:meth:`append`), on disk in a temporary
    folder under ``folder`` (default: the system's), removed by :meth:`close` or when this is collected."""

    def __init__(self, folder: str | None = None):
        self._dir = tempfile.TemporaryDirectory(prefix="ping-llm-predictions-", dir=folder)
        self._names: list[str] = []
        self.rows = 0

    def _path(self, name: str, field: str) -> str:
        return os.path.join(self._dir.name, f"{self._names.index(name):03d}.{field}")

    def append(self, block: dict[str, bl.Prediction]) -> None:
        """Add a block's predictions (every block names the same predictors, with the same number of rows)."""
        if not self._names:
            self._names = list(block)
        if list(block) != self._names:
            raise ValueError(f"predictors {list(block)} after {self._names}")
        n = {len(p.value) for p in block.values()}
        if len(n) != 1:
            raise ValueError(f"predictors of one block with different lengths {sorted(n)}")
        for name, p in block.items():
            for field, dtype in _FIELDS:
                with open(self._path(name, field), "ab") as f:
                    np.ascontiguousarray(getattr(p, field), dtype).tofile(f)
        self.rows += n.pop()

    def __getitem__(self, name: str) -> bl.Prediction:
        if name not in self._names:
            raise KeyError(name)
        if not self.rows:
            return bl.Prediction(*(np.zeros(0, dtype) for _, dtype in _FIELDS))
        return bl.Prediction(*(np.memmap(self._path(name, field), dtype, mode="r", shape=(self.rows,))
                               for field, dtype in _FIELDS))

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def close(self) -> None:
        self._dir.cleanup()


class Table(collections.abc.MutableMapping):
    """The report's per-measurement table: plain columns (``dict``) and predictions, some spilled
    (:class:`SpilledPredictions`, read on access) and some in memory (set like a dict's items)."""

    def __init__(self, columns: dict, spilled: SpilledPredictions):
        self._columns, self._spilled = dict(columns), spilled
        self._first = list(columns)  # the order a dict of all would have: columns, spilled, then later items

    def __getitem__(self, key):
        if key in self._columns:
            return self._columns[key]
        return self._spilled[key]

    def __setitem__(self, key, value) -> None:
        self._columns[key] = value

    def __delitem__(self, key) -> None:
        del self._columns[key]
        if key in self._first:
            self._first.remove(key)

    def __iter__(self):
        yield from self._first
        yield from (name for name in self._spilled if name not in self._columns)
        yield from (key for key in self._columns if key not in self._first)

    def __len__(self) -> int:
        return len(set(self._columns) | set(self._spilled))
