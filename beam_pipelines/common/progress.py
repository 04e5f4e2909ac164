"""Progress of a running job: one reporter for every CLI, fed by markers that workers leave in scratch.

Workers may be other processes or other machines, so they report through small files in the job's
scratch area (:func:`write_marker`); the launcher polls them (:func:`sum_markers`) from a
:class:`Progress` thread, which shows a bar on a terminal and, otherwise (a log, CI), a line every
``every`` seconds::

    [pretokenize] encoded 54,464/120,000 rows (45%), 11,933 rows/s, ETA 5 s

No Apache Beam import here.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from beam_pipelines.common import storage
from beam_pipelines.common.files import atomic_path

POLL_SECONDS = 0.5  # how often the bar is refreshed; lines are printed every ``every`` seconds


def write_marker(directory: str, name: str, **counts: int) -> None:
    """Leave (or replace) ``directory/name.json`` holding ``counts``, for the launcher's progress display.

    Best effort: a marker that cannot be written only makes the display lag, never fails the work.
    ``directory`` may be an object-store URL (the marker is then one small object).
    """
    if storage.is_remote(directory):
        with contextlib.suppress(OSError):
            storage.write_bytes(storage.join(directory, f"{name}.json"), json.dumps(counts).encode())
        return
    with contextlib.suppress(OSError), atomic_path(os.path.join(directory, f"{name}.json")) as tmp, open(tmp, "w") as f:
        json.dump(counts, f)


def sum_markers(directory: str, pattern: str, key: str) -> int:
    """Sum of ``key`` over the JSON markers in ``directory`` matching ``pattern`` (e.g. ``encode-*.json``).

    A marker being replaced right now (missing, partly written) is skipped: it is counted on the next poll.
    """
    total = 0
    try:
        names = [n for n in storage.listdir(directory) if fnmatch.fnmatchcase(n, pattern)]
    except OSError:
        return 0  # not there yet (or a store that cannot be listed right now): counted on the next poll
    for name in names:
        try:
            total += json.loads(storage.read_bytes(os.path.join(directory, name)))[key]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return total


class Progress(threading.Thread):
    """Polls ``count()`` until stopped and shows how much of ``total`` is done, its rate and the ETA.

    On a terminal: a tqdm bar. Otherwise: ``[job] label done/total unit (pct%), rate unit/s, ETA s``
    every ``every`` seconds once something is done (without a total: ``done unit, rate unit/s``);
    ``detail(elapsed)``, when given, adds ``; <its text>`` to each line. Use it as a context manager, or
    ``start()`` then ``stop()``.
    """

    def __init__(
        self,
        job: str,
        count: Callable[[], int],
        total: int | None = None,
        *,
        unit: str = "rows",
        label: str = "",
        every: float = 10.0,
        detail: Callable[[float], str] | None = None,
        stream: TextIO | None = None,
    ):
        super().__init__(daemon=True, name=f"{job}-progress")
        self._job, self._count, self._total, self._unit = job, count, total, unit
        self._label, self._every, self._detail = label, every, detail
        self._stream = stream
        self._halt = threading.Event()
        self._start = time.monotonic()

    def line(self, done: int, elapsed: float) -> str:
        """The text line for ``done`` units after ``elapsed`` seconds."""
        rate = done / elapsed if elapsed > 0 else 0.0
        head = f"[{self._job}] " + (f"{self._label} " if self._label else "")
        if self._total is None:
            text = f"{head}{done:,} {self._unit}, {rate:,.0f} {self._unit}/s"
        else:
            eta = (self._total - done) / rate if rate else float("inf")
            text = (
                f"{head}{done:,}/{self._total:,} {self._unit} ({100 * done / max(self._total, 1):.0f}%), "
                f"{rate:,.0f} {self._unit}/s, ETA {eta:,.0f} s"
            )
        if self._detail is not None:
            text += f"; {self._detail(elapsed)}"
        return text

    def run(self) -> None:
        stream = self._stream or sys.stderr
        tty = stream.isatty()
        bar = None
        if tty:
            bar = tqdm(total=self._total, unit=self._unit, unit_scale=True, desc=self._label or self._job, file=stream)
        last_line = self._start
        while not self._halt.wait(min(POLL_SECONDS, self._every)):
            done = self._count()
            now = time.monotonic()
            if bar is not None:
                bar.update(done - bar.n)
            elif done and now - last_line >= self._every:
                print(self.line(done, now - self._start), file=stream, flush=True)
                last_line = now
        if bar is not None:
            bar.close()

    def stop(self) -> None:
        """Stop polling and wait (briefly) for the thread; the bar, if any, is closed."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)

    def __enter__(self) -> Progress:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
