"""The tokenizer schemes by name (:func:`get_scheme`), and the one tokenizer check every reader of a dataset
makes (:func:`check_tokenizer`)."""

from __future__ import annotations

from collections.abc import Mapping

from tokenizer.schemes import Scheme, TokenizerMismatch
from tokenizer.v1 import V1
from tokenizer.v2 import V2

_SCHEMES: dict[str, Scheme] = {scheme.name: scheme for scheme in (V1, V2)}


def scheme_names() -> tuple[str, ...]:
    """The names of the schemes this code reads and writes."""
    return tuple(_SCHEMES)


def get_scheme(name_or_entry: str | Mapping) -> Scheme:
    """The scheme named ``name_or_entry`` (``"v1"``, ``"v2"``), or the one a manifest's ``tokenizer`` entry
    describes. An entry must agree with the scheme on version, vocabulary size and pad id.

    Raises :class:`TokenizerMismatch` (a ``ValueError``) for an unknown name or an entry that disagrees.
    """
    registry = _SCHEMES
    if isinstance(name_or_entry, Mapping):
        name = name_or_entry.get("name")
    else:
        name = name_or_entry
    scheme = registry.get(name) if isinstance(name, str) else None
    if scheme is None:
        raise TokenizerMismatch(f"unknown tokenizer scheme {name!r} (this code knows {', '.join(registry)})")
    if isinstance(name_or_entry, Mapping):
        for key, want in scheme.info().items():
            if name_or_entry.get(key) != want:
                raise TokenizerMismatch(
                    f"tokenizer {name!r}: {key} is {name_or_entry.get(key)!r}, but scheme {name} has {want!r} "
                    f"(tokenizer entry {dict(name_or_entry)})"
                )
    return scheme


def check_tokenizer(entry: Mapping, seq_len: int | None = None, *, expected: Mapping | str | None = None,
                    expected_seq_len: int | None = None) -> Scheme:
    """The one tokenizer check every reader of a dataset makes: the manifest's ``tokenizer`` ``entry`` (and
    its ``seq_len``) against what the reader expects; returns the dataset's scheme.

    ``expected`` is a scheme name, or a ``tokenizer`` entry (name, version, vocab_size, pad_id: a model
    config's, a checkpoint's); None accepts any scheme this code knows. ``expected_seq_len`` None accepts
    any ``seq_len`` that holds one measurement. Raises :class:`TokenizerMismatch` naming the key, both values
    and what to do.
    """
    if expected is not None:
        want = get_scheme(expected).info() if isinstance(expected, str) else dict(expected)
        for key, value in want.items():
            if entry.get(key) != value:
                raise TokenizerMismatch(
                    f"dataset tokenizer {key} is {entry.get(key)!r} but {value!r} is expected (dataset tokenizer "
                    f"{dict(entry)}, expected {want}); pretokenize with --tokenizer {want.get('name')} or use a "
                    f"config of the dataset's scheme"
                )
    scheme = get_scheme(entry)
    if seq_len is not None:
        if expected_seq_len is not None and seq_len != expected_seq_len:
            raise TokenizerMismatch(f"dataset seq_len is {seq_len} but seq_len={expected_seq_len} is expected")
        if seq_len < scheme.min_seq_len:
            raise TokenizerMismatch(f"dataset seq_len {seq_len} is shorter than one {scheme.name} measurement "
                                    f"({scheme.min_seq_len} tokens)")
    return scheme
