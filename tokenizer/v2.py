"""Scheme ``v2``: a compact layout of runs of one source's measurements (docs/tokenizer.md, "Scheme v2").

A record is a sequence of *runs*, each one source's measurements in time order, then PAD::

    run          [Src4, 4 bytes | Src6, 16 bytes]  measurement  measurement ...
    measurement  time  dst  size  errors  rtt          (stored in this order: addresses first, RTT last)

    time    the run's first measurement: [Time32, 4 bytes] (uint32 epoch s) or [Time64, 8 bytes] (int64);
            after it, the delta to the run's previous measurement where that is shorter:
            [Delta_d] (one token, d < 256 s) or [Delta16, 2 bytes] (d < 65536 s), else absolute again
    dst     [Dst4, 4 bytes] or [Dst6, 16 bytes]
    size    [Size_v] (one token, v < 256) or [Size16, 2 bytes]
    errors  [Err_v] (one token, 0..255)
    rtt     [RttCoarse_c, RttFine_f]: level 64c + f of a log scale, 0.01 ms * 1.002**level, decoded at the
            level's geometric centre: relative error <= 0.1% from 0.01 ms to 7.7e6 ms; the coarse token
            alone places the RTT within 6.6%. [RttFail] for a failed ping (-1.0); [RttExact, 8 bytes
            float64] (bit-exact) for any other value outside the scale (0, negative, tiny, huge).

Byte ``b`` is id ``b`` (0..255); every other id opens a field, so a stream cuts into runs, measurements and
fields without side information. ``msm_id`` is not written (it is validated as in v1, so both schemes reject
the same rows): on the real file it carries 0.06 bits per measurement once the source and destination are
known, and would cost 5 tokens (docs/tokenizer.md).

The scheme is made of modules by concern: this one is the scheme object (:data:`V2`, what readers reach by
``tokenizer.get_scheme("v2")``); the ids and the RTT scale are :mod:`tokenizer.vocab_v2`; the vectorized
encoder, rows' bodies then records, :mod:`tokenizer.v2_encode`; the record parser :mod:`tokenizer.v2_parse`;
the per-row reference both are tested against :mod:`tokenizer.v2_reference`; the record grammar for
constrained decoding :mod:`tokenizer.grammar_v2`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np

from tokenizer import grammar_v2
from tokenizer import vocab_v2 as vocab
from tokenizer.errors import DecodeError
from tokenizer.grammar import GrammarError
from tokenizer.measurement import epoch_seconds
from tokenizer.schemes import FieldSpec, Parsed, RttCodec, Scheme, Survey
from tokenizer.table import EncodedTable
from tokenizer.v2_encode import Items, assemble, encode_table, head_lengths
from tokenizer.v2_parse import address_key, parse_records, survey
from tokenizer.v2_reference import (
    absolute_time,
    address_bytes,
    destination_tokens,
    later_time,
    size_tokens,
    source_tokens,
)


class _V2Rtt(RttCodec):
    """v2's RTT: two value tokens, ``RttCoarse_c`` then ``RttFine_f`` (level 64c + f of the log scale),
    with no role token before them (the coarse token opens the field). Coarse and fine ids each ascend
    with the value, so :meth:`value_tokens` is the id range in order. ``RttFail`` (one token) is the
    failure; ``RttExact`` (+ 8 bytes) an exact value off the scale, which the descent leaves out."""

    role = None
    width = 2
    failure_tokens = np.array([vocab.RTT_FAIL], np.int64)
    rel_error = math.sqrt(vocab.RTT_RATIO) - 1
    lo_ms = vocab.RTT_LO
    hi_ms = vocab.RTT_HI

    def grammar_tokens(self, position: int) -> np.ndarray:
        self._check(position)
        if position == 0:
            coarse = np.arange(vocab.RTT_COARSE_BASE, vocab.RTT_COARSE_BASE + vocab.RTT_COARSE)
            return np.concatenate([[vocab.RTT_FAIL, vocab.RTT_EXACT], coarse])
        return np.arange(vocab.RTT_FINE_BASE, vocab.RTT_FINE_BASE + vocab.RTT_FINE, dtype=np.int64)

    def value_tokens(self, position: int) -> np.ndarray:
        self._check(position)
        if position == 0:
            return np.arange(vocab.RTT_COARSE_BASE, vocab.RTT_COARSE_BASE + vocab.RTT_COARSE, dtype=np.int64)
        return np.arange(vocab.RTT_FINE_BASE, vocab.RTT_FINE_BASE + vocab.RTT_FINE, dtype=np.int64)

    def success_mask(self, prefix: np.ndarray) -> np.ndarray:
        prefix = np.asarray(prefix, np.int64)
        b, t = prefix.shape
        self._check(t)
        return np.ones((b, vocab.RTT_COARSE if t == 0 else vocab.RTT_FINE), bool)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, np.int64)
        c, f = tokens[..., 0] - vocab.RTT_COARSE_BASE, tokens[..., 1] - vocab.RTT_FINE_BASE
        if np.any((c < 0) | (c >= vocab.RTT_COARSE) | (f < 0) | (f >= vocab.RTT_FINE)):
            raise DecodeError("v2 RTT: expected a coarse then a fine token")
        return vocab.RTT_CENTRES[c * vocab.RTT_FINE + f]

    def encode(self, values: np.ndarray) -> np.ndarray:
        level = vocab.rtt_levels(np.asarray(values, np.float64))
        if np.any(level < 0):
            raise ValueError(f"v2 RTT: values outside [{vocab.RTT_LO}, {vocab.RTT_HI}) ms have no scale tokens")
        return np.stack(vocab.rtt_scale_tokens(level), axis=-1)


def _token_names() -> tuple[str, ...]:
    names = [f"byte{b:02x}" for b in range(vocab.NUM_BYTES)]
    names += ["Src4", "Src6", "Dst4", "Dst6", "Time32", "Time64", "Delta16"]
    names += [f"Delta{d}" for d in range(vocab.DELTA_COUNT)] + ["RttFail", "RttExact"]
    names += [f"RttCoarse{c}" for c in range(vocab.RTT_COARSE)] + [f"RttFine{f}" for f in range(vocab.RTT_FINE)]
    names += ["Size16"] + [f"Size{v}" for v in range(vocab.SIZE_COUNT)] + [f"Err{v}" for v in range(vocab.ERR_COUNT)]
    names.append("PAD")
    assert len(names) == vocab.VOCAB_SIZE
    return tuple(names)


def _field_spec() -> FieldSpec:
    # kinds: 0 source header, 1 time, 2 destination, 3 size, 4 errors, 5 rtt
    block = np.full(vocab.VOCAB_SIZE, -1, np.int32)
    block[[vocab.SRC4, vocab.SRC6]] = 0
    block[[vocab.TIME32, vocab.TIME64, vocab.DELTA16]] = 1
    block[vocab.DELTA_BASE : vocab.DELTA_BASE + vocab.DELTA_COUNT] = 1
    block[[vocab.DST4, vocab.DST6]] = 2
    block[vocab.SIZE16] = 3
    block[vocab.SIZE_BASE : vocab.SIZE_BASE + vocab.SIZE_COUNT] = 3
    block[vocab.ERR_BASE : vocab.ERR_BASE + vocab.ERR_COUNT] = 4
    block[[vocab.RTT_FAIL, vocab.RTT_EXACT]] = 5
    block[vocab.RTT_COARSE_BASE : vocab.RTT_COARSE_BASE + vocab.RTT_COARSE] = 5
    return FieldSpec(block_kind=block, kinds=6, max_offset=16)


def _groups() -> dict:
    ids = np.arange(vocab.VOCAB_SIZE)
    kind = vocab.KIND[:vocab.VOCAB_SIZE]
    return {
        "byte_tokens": kind == vocab.K_BYTE,
        "source_tokens": kind == vocab.K_SRC,
        "time_tokens": (kind == vocab.K_TIME_ABS) | (kind == vocab.K_DELTA),
        "destination_tokens": kind == vocab.K_DST,
        "size_tokens": kind == vocab.K_SIZE,
        "error_tokens": kind == vocab.K_ERR,
        "rtt_tokens": (kind == vocab.K_RTT) | (kind == vocab.K_FINE),
        "pad_tokens": ids == vocab.PAD,
    }


class SchemeV2(Scheme):
    """The compact scheme: runs of one source, time deltas, a 2-token log-scale RTT; no msm_id."""

    name = "v2"
    version = 1
    vocab_size = vocab.VOCAB_SIZE
    pad_id = vocab.PAD
    keeps_msm_id = False
    # the longest single measurement, as a run start
    min_seq_len = vocab.SRC_LEN[6] + 9 + vocab.DST_LEN[6] + 3 + 1 + 9
    item_lengths = None  # variable: the packer plans runs (packing.plan_runs) and assemble() lays them out
    rtt = _V2Rtt()
    field_spec = _field_spec()
    token_names = _token_names()
    block_names = ("dst_addr", "size", "packet_error_count", "rtt")  # stored in this order: evaluation's
    field_orders = np.array(list(itertools.permutations(range(4))), dtype=np.int8)  # (24, 4)
    eval_order = 0
    kind_names = ("src_addr", "timestamp", "dst_addr", "size", "errors", "rtt")
    structural_ids = np.zeros(vocab.VOCAB_SIZE, bool)  # every id carries a value of its field
    token_groups = _groups()
    grammar = grammar_v2  # tokenizer.grammar_v2: the record state machine for constrained decoding

    legend = f"bytes 0-255, field tokens 256-{vocab.VOCAB_SIZE - 2}, PAD {vocab.PAD}"

    def encode_table(self, table) -> EncodedTable:
        return encode_table(table)

    def parse_records(self, records: np.ndarray, *, first_record: int = 0) -> Parsed:
        return parse_records(records, first_record=first_record)

    def survey(self, records: np.ndarray) -> Survey:
        return survey(records)

    Items = Items  # the items assemble() lays out (the pack stage builds them)

    @staticmethod
    def head_lengths(items: Items):
        return head_lengths(items)

    @staticmethod
    def assemble(items: Items, seq_len: int, record_first: np.ndarray) -> np.ndarray:
        return assemble(items, seq_len, record_first)

    def rtt_prompt_at(self, record: np.ndarray, start: int, end: int) -> np.ndarray:
        """The record before the measurement, its head (the run's source header where it opens a run, and its
        time), then its destination, size and error count; the RTT's coarse token comes next. On disk these
        are already in this order; a record in another of v2's field orders is put back into it."""
        record = np.asarray(record, np.int64)
        m = record[start:end]
        kind = vocab.KIND[m]
        opener = np.flatnonzero((kind != vocab.K_BYTE) & (kind != vocab.K_FINE))
        ends = np.append(opener[1:], len(m))
        head, fields = [], {}
        for s, e in zip(opener.tolist(), ends.tolist()):
            k = int(kind[s])
            if k in (vocab.K_SRC, vocab.K_TIME_ABS, vocab.K_DELTA) and not fields:
                head.append(m[s:e])
            elif k in (vocab.K_DST, vocab.K_SIZE, vocab.K_ERR, vocab.K_RTT) and k not in fields and head:
                fields[k] = m[s:e]
            else:
                raise DecodeError(f"tokens {start}..{end} of the record are not one v2 measurement")
        if len(fields) != 4:
            raise DecodeError(f"tokens {start}..{end} of the record are not one v2 measurement (fields missing)")
        return np.concatenate([record[:start], *head, *(fields[k] for k in (vocab.K_DST, vocab.K_SIZE, vocab.K_ERR))])

    def rtt_prompt(self, context: np.ndarray, row: Mapping) -> np.ndarray:
        """The prompt for the RTT of a measurement given by its known fields, after ``context`` (a record's
        earlier tokens: whole measurements, or nothing): ``row`` holds ``src_addr`` and ``event_time`` (epoch
        seconds, or a datetime; None: the prompt is the source header alone, the time to be drawn), and any
        of ``dst_addr``, ``size``, ``packet_error_count``. The head is what the pretokenizer writes after that
        context: a time delta where the context's last run is this source and the delta is shorter, else the
        source header and the absolute time; the given fields follow in evaluation's order. Raises ValueError
        for a destination of the other family."""
        context = np.asarray(context, np.int64)
        version, src = address_bytes(row["src_addr"])
        if row.get("event_time") is None:  # only the run's source header: the time is to be drawn
            return np.concatenate([context, np.array(source_tokens(version, src), np.int64)])
        ts = row["event_time"] if isinstance(row["event_time"], (int, np.integer)) else epoch_seconds(row["event_time"])
        previous = None
        if len(context):
            parsed = parse_records(context[None])
            if len(parsed):
                key = address_key(version, src)
                if np.array_equal(parsed.src[-1], key) and int(parsed.timestamp[-1]) <= ts:
                    previous = int(parsed.timestamp[-1])
        if previous is None:
            head = source_tokens(version, src) + absolute_time(ts)
        else:
            head = later_time(ts, previous)
        body = []
        if row.get("dst_addr") is not None:
            dst_version, dst = address_bytes(row["dst_addr"])
            if dst_version != version:
                raise ValueError(f"src_addr {row['src_addr']} and dst_addr {row['dst_addr']} are of different families")
            body += destination_tokens(version, dst)
        if row.get("size") is not None:
            body += size_tokens(int(row["size"]))
        if row.get("packet_error_count") is not None:
            body.append(vocab.ERR_BASE + int(row["packet_error_count"]))
        return np.concatenate([context, np.array(head + body, np.int64)])

    restart_id = vocab.PAD  # what a finished sample feeds the model while others finish (PAD opens no field)

    @staticmethod
    def current_measurement(prompt) -> np.ndarray:
        """The tokens a prompt's last measurement needs to decode: from its run's source header."""
        prompt = np.asarray(prompt, np.int64)
        heads = np.flatnonzero(np.isin(prompt, (vocab.SRC4, vocab.SRC6)))
        if not len(heads):
            raise GrammarError("a v2 prompt must contain the source header of the run to continue")
        return prompt[heads[-1] :]

    def sample_state(self, prompt: np.ndarray):
        """The state after the prompt, read from its last run's source header (a header resets everything the
        grammar tracks, so the tokens before it need not be read again)."""
        return grammar_v2.state_of(self.current_measurement(prompt))

    def decode_sample(self, prompt: np.ndarray, generated: np.ndarray) -> dict:
        generated = np.asarray(generated, np.int64)
        record = np.concatenate([np.asarray(prompt, np.int64), generated[generated != vocab.PAD]])
        return self.decode_record(record)[-1]


V2 = SchemeV2()


__all__ = ["V2", "SchemeV2"]
