"""Strict command lines, shared by every CLI of the project (the Beam jobs and the trainer's).

A command refuses an option it does not know: one ``error: unrecognized option --ouput (did you mean
--output?)`` line on stderr and exit 2 (:class:`~beam_pipelines.common.errors.UsageError`), before it
reads or writes anything. Without this, a typo such as ``--ouput`` in a Beam job was handed to Beam,
which dropped it with a warning, and the job wrote to the default output instead.

* :class:`StrictArgumentParser`: argparse whose every complaint is a :class:`UsageError` (one line, no
  usage block) and which takes no abbreviations (``--out`` is not ``--output``: an option is known by its
  full name only, as Beam does for its own options).
* :func:`parse_options`: a command without pass-through options (the trainer's CLIs, ``make_sample``).
* :func:`parse_job_args`: a Beam job. An option the job does not know goes to Beam only when Beam knows
  it (:class:`beam_pipelines.common.options.BeamOptionNames`, through Beam's public options API);
  anything else is refused. Beam is imported only when such an option is given, so a job run with its
  own options alone (``pretokenize --in_process``) starts without importing Beam.
* :func:`add_output_modes`: ``--overwrite`` and ``--append``, the two ways a job may treat an earlier output.
* :func:`fields_from`: a job's typed options from the parsed arguments (and its job context from its
  options), each field taken from the attribute of the same name unless given.

No Apache Beam import at module level: the trainer uses this module too.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Iterable, Sequence

from beam_pipelines.common.errors import UsageError, unknown_option

# argparse reads a token such as "-5" or "-.5" as a value, not an option, when no option looks like one.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def add_output_modes(parser: argparse.ArgumentParser, overwrite: str, append: str) -> None:
    """Add ``--overwrite`` (replace the earlier output in ``--output``) and ``--append`` (add the new inputs
    to it as a version), with the job's help texts."""
    parser.add_argument("--overwrite", action="store_true", help=overwrite)
    parser.add_argument("--append", action="store_true", help=append)


def fields_from(cls, source, **values):
    """An instance of the dataclass ``cls``: each field in ``values`` takes that value, every other one the
    attribute of the same name of ``source`` (parsed arguments, a job's options) when it has one, else its
    default."""
    same = {f.name: getattr(source, f.name) for f in dataclasses.fields(cls) if f.name not in values and hasattr(source, f.name)}
    return cls(**same, **values)


class StrictArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` that raises :class:`UsageError` instead of printing usage and exiting.

    ``option_names`` lists every option string it knows (``--output``, ``--no-progress``, ``-h``...), for
    :func:`parse_job_args` and for the "did you mean" hint; options added through a mutually exclusive
    group or an argument group count too. Abbreviations are off unless ``allow_abbrev=True`` is given.
    ``--help`` still prints the help and exits 0 (``SystemExit``), as argparse does.
    """

    def __init__(self, *args, **kwargs):
        self.option_names: list[str] = []  # set before argparse's __init__, which adds -h/--help
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.option_names.extend(action.option_strings)
        return action

    def add_argument_group(self, *args, **kwargs):
        return _NamesKept(super().add_argument_group(*args, **kwargs), self.option_names)

    def add_mutually_exclusive_group(self, **kwargs):
        return _NamesKept(super().add_mutually_exclusive_group(**kwargs), self.option_names)

    def error(self, message: str):
        """argparse's complaint (a bad value, a missing required option...) as one ``error:`` line, exit 2."""
        raise UsageError(message)


class _NamesKept:
    """An argparse group that records the option strings of what is added through it in ``names``."""

    def __init__(self, group, names: list[str]):
        self._group, self._names = group, names

    def add_argument(self, *args, **kwargs):
        action = self._group.add_argument(*args, **kwargs)
        self._names.extend(action.option_strings)
        return action

    def __getattr__(self, name):
        return getattr(self._group, name)


def option_names_in(argv: Sequence[str]) -> list[str]:
    """The option names given in ``argv`` (``--output=X`` -> ``--output``), in order, up to a ``--``.

    A token is an option when it starts with ``-`` and is not a negative number: what argparse does
    for a parser with no option that looks like a negative number (none of ours has one)."""
    names = []
    for token in argv:
        if token == "--":
            break
        if token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token):
            names.append(token.split("=", 1)[0])
    return names


def _refuse_unknown(parser: StrictArgumentParser, argv: Sequence[str], known: Callable[[str], bool] | None = None,
                    more_names: Callable[[], Iterable[str]] | None = None) -> None:
    """Raise for the first option in ``argv`` that neither ``parser`` nor ``known`` knows.

    Checked before argparse parses, so that a misspelt option is the error reported even when it leaves
    a required option missing (``ingest_atlas --ouput X``: the mistake is --ouput, not a missing --output)."""
    own = set(parser.option_names)
    for name in option_names_in(argv):
        if name not in own and not (known is not None and known(name)):
            raise unknown_option(name, parser.option_names, more_names() if more_names is not None else ())


def parse_options(parser: StrictArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line of a command that passes nothing on: anything it does not know is a
    :class:`UsageError` (``unrecognized option --x (did you mean --y?)``, or argparse's own message)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _refuse_unknown(parser, argv)
    return parser.parse_args(argv)


def parse_job_args(parser: StrictArgumentParser, argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Parse a Beam job's command line into its own options and the Beam options it passes on.

    Returns ``(namespace, beam_args)``: ``beam_args`` are the tokens the job does not take itself, each an
    option that Beam knows (with its value), checked by Beam's own parser (a bad value of a Beam option,
    ``--direct_num_workers=x``, is a :class:`UsageError` too). An option neither knows, or a stray
    argument, is a :class:`UsageError` naming it, raised before anything is read or written.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    beam = None

    def beam_names():
        nonlocal beam
        if beam is None:
            from beam_pipelines.common.options import BeamOptionNames  # imports Beam: only when needed

            beam = BeamOptionNames(argv)
        return beam

    _refuse_unknown(parser, argv, known=lambda name: beam_names().knows(name), more_names=lambda: beam_names().names)
    args, rest = parser.parse_known_args(argv)
    if rest:
        beam_names().check(rest)
    return args, rest
