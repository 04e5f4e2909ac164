"""Tokenizer schemes: one object per scheme that owns every fact about its tokens.

A dataset names its scheme in its manifest (``manifest["tokenizer"]``: name, version, vocabulary size, pad
id); readers get the scheme object with :func:`get_scheme` and never name a token id, a block length or an
offset themselves::

    scheme = tokenizer.get_scheme(manifest["tokenizer"])   # or get_scheme("v2")
    parsed = scheme.parse_records(records)                 # (records, seq_len) -> per-measurement arrays
    rows = scheme.decode_record(records[0])                # one record -> list of dicts (seed's columns)

What a scheme object carries (:class:`Scheme`): its identity (:attr:`~Scheme.name`,
:attr:`~Scheme.version`, :attr:`~Scheme.vocab_size`, :attr:`~Scheme.pad_id`; :meth:`~Scheme.info` is the
manifest entry), the vectorized table encoder, **one** vectorized record parser (:meth:`~Scheme.parse_records`,
which evaluation, stats, augmentation and the probes reuse), the RTT codec (:attr:`~Scheme.rtt`, see
:class:`RttCodec`), the grammar for constrained decoding, what the model's field embedding needs
(:attr:`~Scheme.field_spec`, see :class:`FieldSpec`) and :meth:`~Scheme.decode_record`.

The schemes by name, and the tokenizer check a reader makes before it reads records (name, version,
vocabulary, pad id, seq_len), are in :mod:`tokenizer.registry`.
"""

from __future__ import annotations

import dataclasses
import ipaddress

import numpy as np

from tokenizer.errors import DecodeError

_V4_MAPPED_HIGH = 0xFFFF  # an IPv4 address is keyed as ::ffff:a.b.c.d (the low word's top 32 bits)


class TokenizerMismatch(ValueError):
    """A dataset's tokenizer (or seq_len) is not the one the reader expects; the message names both."""


@dataclasses.dataclass(frozen=True)
class Parsed:
    """The measurements of a block of records, one entry per measurement in reading order; (n,) each.

    Addresses are 128-bit keys ``(high, low)`` uint64 words; an IPv4 address is keyed as its IPv4-mapped
    IPv6 form (``::ffff:a.b.c.d``), so both families share one key space (``family`` tells them apart).
    """

    record: np.ndarray  # int64 index of the record (first_record + row of the block)
    start: np.ndarray  # int32 first token of the measurement in its record
    end: np.ndarray  # int32 one past its last token
    family: np.ndarray  # int8 4 or 6
    src: np.ndarray  # (n, 2) uint64 source address key
    dst: np.ndarray  # (n, 2) uint64 destination address key
    rtt: np.ndarray  # float64 ms (-1.0: a failed ping); exact or within the scheme's RTT bound
    timestamp: np.ndarray  # int64 epoch seconds
    size: np.ndarray  # int64
    errors: np.ndarray  # int64 packet_error_count
    msm_id: np.ndarray | None  # int64, or None where the scheme does not keep it
    rtt_pos: np.ndarray  # int64 flat position (in the block's records, read flat) of the RTT's first value token
    dst_pos: np.ndarray  # int64 flat position of the destination block's first token
    blocks: np.ndarray | None = None  # (n, K) int64 flat start of each permutable field block, in the
    # scheme's canonical block order (Scheme.block_names); a measurement's blocks tile it after its prefix

    def __len__(self) -> int:
        return len(self.rtt)


@dataclasses.dataclass(frozen=True)
class Survey:
    """What a lenient pass over records finds without decoding them (dataset statistics): it never raises,
    so a report can count malformed records instead of stopping at the first."""

    measurements: np.ndarray  # (records,) int64 measurements begun in each record
    starts_ok: np.ndarray  # (records,) bool: the record is empty or begins as a record of the scheme must
    source_family: np.ndarray  # (n,) int8 4 or 6, one per source address written
    source_key: np.ndarray  # (n, 2) uint64 (high, low) address key, the same keying as Parsed.src
    ipv4_measurements: int
    ipv6_measurements: int


class RttCodec:
    """How a scheme writes an RTT, for readers that score or search RTT tokens (evaluation, quantiles by
    descent). The same interface as ``trainer.eval.quantiles.RttCode``.

    A successful RTT is :attr:`width` *value tokens* at flat positions ``Parsed.rtt_pos + arange(width)``;
    :attr:`role` is the token right before them when the scheme has one (v1: ``RttStart``), None when the
    first value token opens the field itself (v2). At value position ``k``:

    - :meth:`grammar_tokens` ``(k)``: every token the grammar allows there (failures and escapes included);
    - :meth:`value_tokens` ``(k)``: the tokens a successful RTT may have there, **in ascending order of the
      value** they lead to (with the earlier positions fixed): a descent that takes, position by position,
      the token whose cumulative probability crosses a quantile finds that quantile's RTT;
    - :meth:`success_mask` ``(prefix)``: which of those keep the value a finite successful RTT after the
      value tokens ``prefix`` (B, k) so far.

    :attr:`failure_tokens` are the first tokens that mean a failed ping (rtt = -1.0). :meth:`decode` maps
    (..., width) value tokens to milliseconds, :meth:`encode` (n,) milliseconds in [:attr:`lo_ms`,
    :attr:`hi_ms`] back to tokens, within a relative error of :attr:`rel_error` (0.0: exact).
    """

    role: int | None
    width: int
    failure_tokens: np.ndarray
    rel_error: float
    lo_ms: float
    hi_ms: float

    def grammar_tokens(self, position: int) -> np.ndarray:
        raise NotImplementedError

    def value_tokens(self, position: int) -> np.ndarray:
        raise NotImplementedError

    def success_mask(self, prefix: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check(self, position: int) -> None:
        if not 0 <= position < self.width:
            raise ValueError(f"RTT value token position {position} outside 0..{self.width - 1}")


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """What the model's field embedding needs: which ids open a field block, and how long a block may be.

    A token's field row is ``(kind of the latest block start at or before it) * (max_offset + 1) +
    min(offset from that start, max_offset)``; ``block_kind[id]`` is the kind an id opens (-1: none).
    There are ``kinds`` block kinds and one more for "no block yet" (``kinds``).
    """

    block_kind: np.ndarray  # (vocab_size,) int32: the kind an id opens, -1 for ids that open no block
    kinds: int  # block kinds (the "no block yet" kind is ``kinds``)
    max_offset: int  # offsets are clipped here (the longest block's length - 1)

    @property
    def rows(self) -> int:
        """Rows of the field-embedding table."""
        return (self.kinds + 1) * (self.max_offset + 1)


class Scheme:
    """One tokenizer scheme; subclasses fill in the identity and the methods below."""

    name: str
    version: int
    vocab_size: int
    pad_id: int
    keeps_msm_id: bool
    min_seq_len: int  # the shortest record that holds any one measurement
    item_lengths: tuple[int, int] | None  # tokens of an IPv4 and an IPv6 measurement where fixed (v1), else None
    rtt: RttCodec
    field_spec: FieldSpec
    token_names: tuple[str, ...]  # a short name per id (report and debugging aid)
    block_names: tuple[str, ...]  # the permutable field blocks of a measurement, in canonical order
    field_orders: np.ndarray  # (orders, K) int8: every order of the K blocks, lexicographic
    eval_order: int  # the index in field_orders of the order evaluation asks in (addresses first, RTT last)
    kind_names: tuple[str, ...]  # per field_spec kind: the loss kind (trainer.augment.KIND_NAMES) its tokens count as
    structural_ids: np.ndarray  # (vocab_size,) bool: ids that carry no value (their loss kind is "role")
    token_groups: dict  # report name -> (vocab_size,) bool mask of the ids it counts (stats)

    def info(self) -> dict:
        """The manifest's ``tokenizer`` entry of this scheme."""
        return {"name": self.name, "version": self.version, "vocab_size": self.vocab_size, "pad_id": self.pad_id}

    def encode_table(self, table):
        """Encode a whole Arrow table or record batch, vectorized (see the scheme's module)."""
        raise NotImplementedError

    def parse_records(self, records: np.ndarray, *, first_record: int = 0) -> Parsed:
        """(records, seq_len) uint16 -> :class:`Parsed`; DecodeError naming the record on a malformed one."""
        raise NotImplementedError

    def survey(self, records: np.ndarray) -> Survey:
        """(records, seq_len) -> :class:`Survey`: counts by structure alone, for any token stream."""
        raise NotImplementedError

    # --- the model's prompts and constrained samples (trainer.evaluate, trainer.predict, sampling) -------

    def rtt_prompt_at(self, record: np.ndarray, start: int, end: int) -> np.ndarray:
        """The model's input for predicting the RTT of the measurement at ``record[start:end]`` (a
        ``Parsed`` span): the record's tokens before it, then the measurement's other fields in evaluation's
        order (addresses first), ending where the RTT's value tokens begin (after its role token where the
        scheme has one). Nothing of the RTT is in it. int64 tokens; DecodeError when the span is not one
        measurement."""
        raise NotImplementedError

    restart_id: int  # the token a finished sample feeds the model while the batch's other samples finish

    def current_measurement(self, prompt: np.ndarray) -> np.ndarray:
        """The tail of ``prompt`` that its last measurement needs to decode (v1: from its MeasurementStart;
        v2: from its run's source header); ``GrammarError`` when there is none."""
        raise NotImplementedError

    def sample_state(self, prompt: np.ndarray):
        """The grammar state (batch of one) after ``prompt``, whose last measurement is unfinished; raises
        ``GrammarError`` where ``prompt`` breaks the grammar."""
        raise NotImplementedError

    def decode_sample(self, prompt: np.ndarray, generated: np.ndarray) -> dict:
        """The measurement that ``prompt`` + ``generated`` (a sample's tokens, PAD after its end) ends in, as
        a :meth:`decode_record` dict."""
        raise NotImplementedError

    def decode_record(self, tokens: np.ndarray) -> list[dict]:
        """One record (a uint16 array, PAD included) -> one dict per measurement, in reading order.

        Keys are the seed's column names: ``src_addr`` and ``dst_addr`` (canonical text), ``rtt`` (ms;
        -1.0 for a failure), ``event_time`` (int epoch seconds), ``size``, ``packet_error_count``, and
        ``msm_id`` where the scheme keeps it. Raises :class:`DecodeError` on a malformed record.
        """
        tokens = np.asarray(tokens)
        if tokens.ndim != 1:
            raise DecodeError(f"decode_record takes one record (1-d), got shape {tokens.shape}")
        p = self.parse_records(tokens[None, :])
        names = {}
        out = []
        for i in range(len(p)):
            row = {
                "src_addr": _address_text(p.src[i], names),
                "dst_addr": _address_text(p.dst[i], names),
                "rtt": float(p.rtt[i]),
                "event_time": int(p.timestamp[i]),
                "size": int(p.size[i]),
                "packet_error_count": int(p.errors[i]),
            }
            if p.msm_id is not None:
                row["msm_id"] = int(p.msm_id[i])
            out.append(row)
        return out

    def __repr__(self) -> str:
        return f"<tokenizer scheme {self.name} v{self.version}: {self.vocab_size} ids, PAD {self.pad_id}>"


def _address_text(key: np.ndarray, cache: dict) -> str:
    hi, lo = int(key[0]), int(key[1])
    text = cache.get((hi, lo))
    if text is None:
        if hi == 0 and lo >> 32 == _V4_MAPPED_HIGH:
            text = str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
        else:
            text = str(ipaddress.IPv6Address((hi << 64) | lo))
        cache[(hi, lo)] = text
    return text
