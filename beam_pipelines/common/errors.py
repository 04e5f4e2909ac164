"""The error kinds every CLI of the project shares, and the exit code each one means.

Three outcomes, the same in every job and in the trainer's CLIs:

* exit 0: done (or already up to date);
* exit 2 (:data:`EXIT_USAGE`): bad options or bad input, found before anything was written:
  :class:`UsageError` (an option, a config key, an output directory that must not be touched, a second
  writer) and :class:`InputError` (an input file or dataset that is missing, unreadable or malformed);
* exit 1 (:data:`EXIT_FAILED`): the run started and failed (:class:`RunError`, or anything unexpected).

More specific errors subclass these (the trainer's ``DatasetError`` is an :class:`InputError`), so a CLI
maps an exception to its exit code with :func:`exit_code` and never by listing classes. No Apache Beam
import here: the trainer uses this module too.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad options, or an output that must not be touched (another dataset, a running writer)."""


class InputError(ValueError):
    """An input (file, glob, dataset, checkpoint) that is missing, unreadable or malformed."""


class RunError(RuntimeError):
    """The run started and failed; what it wrote is not a complete output."""


def unknown_option(name: str, known: Iterable[str], fallback: Iterable[str] = ()) -> UsageError:
    """``unrecognized option NAME (did you mean CLOSEST?)``: the closest of ``known`` by spelling, else of
    ``fallback`` (Beam's options, after the job's own), when one is close enough to be a likely typo."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(name, list(dict.fromkeys(fallback)), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else " (see --help)"
    return UsageError(f"unrecognized option {name}{hint}")


def exit_code(exc: BaseException) -> int:
    """:data:`EXIT_USAGE` for bad options or input, :data:`EXIT_FAILED` for anything else."""
    return EXIT_USAGE if isinstance(exc, (UsageError, InputError)) else EXIT_FAILED


def report(exc: BaseException, *notes: str) -> int:
    """Print ``error: <exc>`` (and each note on its own line) to stderr; returns :func:`exit_code`."""
    print(f"error: {exc}", file=sys.stderr)
    for note in notes:
        print(note, file=sys.stderr)
    return exit_code(exc)
