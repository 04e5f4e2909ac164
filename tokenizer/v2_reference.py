"""Scheme v2's per-row reference encoder, one token at a time (layout in :mod:`tokenizer.v2`).

The vectorized encoder (:mod:`tokenizer.v2_encode`) is tested against it, and the scheme's RTT prompts
(:meth:`tokenizer.v2.SchemeV2.rtt_prompt`) are built from its pieces: a run's source header, an absolute time
or a delta to the run's previous measurement, and a measurement's destination, size and error count.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping, Sequence

from tokenizer import vocab_v2 as vocab
from tokenizer.measurement import encode_measurement, epoch_seconds


def _be(value: int, width: int, signed: bool = False) -> list[int]:
    return list(int(value).to_bytes(width, "big", signed=signed))


def address_bytes(text: str) -> tuple[int, bytes]:
    """``(version, packed bytes)`` of an address's text; ValueError when it is not an address."""
    ip = ipaddress.ip_address(text)
    return ip.version, ip.packed


def source_tokens(version: int, packed: bytes) -> list[int]:
    """The source header that opens a run."""
    return [vocab.SRC4 if version == 4 else vocab.SRC6, *packed]


def destination_tokens(version: int, packed: bytes) -> list[int]:
    """A measurement's destination field."""
    return [vocab.DST4 if version == 4 else vocab.DST6, *packed]


def size_tokens(size: int) -> list[int]:
    """A measurement's size field: one token below 256, else ``Size16`` and two bytes."""
    return [vocab.SIZE_BASE + size] if size < vocab.SIZE_COUNT else [vocab.SIZE16, *_be(size, 2)]


def reference_body(row: Mapping) -> list[int]:
    """The body (dst, size, errors, rtt) of one valid row, one token at a time (the reference)."""
    out = destination_tokens(*address_bytes(row["dst_addr"]))
    out += size_tokens(int(row["size"]))
    out.append(vocab.ERR_BASE + int(row["packet_error_count"]))
    rtt = float(row["rtt"])
    level = vocab.rtt_level(rtt)
    if rtt == -1.0:
        out.append(vocab.RTT_FAIL)
    elif level is None:
        out += [vocab.RTT_EXACT, *struct.pack(">d", rtt)]
    else:
        out += vocab.rtt_scale_tokens(level)
    return out


def absolute_time(ts: int) -> list[int]:
    """An absolute time: ``Time32`` and four bytes where it fits an unsigned 32-bit value, else ``Time64``."""
    return [vocab.TIME32, *_be(ts, 4)] if 0 <= ts < 1 << 32 else [vocab.TIME64, *_be(ts, 8, signed=True)]


def reference_measurement(row: Mapping, previous: Mapping | None = None) -> list[int]:
    """One row's tokens: with the run's source header when ``previous`` is None (a run starts), else with
    the time as a delta to ``previous`` (the run's previous row, not later in time) where that is shorter.

    Validates the row as v1 does (:class:`~tokenizer.errors.InvalidMeasurement` with the same reason).
    """
    encode_measurement(row)  # the same checks, the same reasons, in the same order
    ts = epoch_seconds(row["event_time"])
    if previous is None:
        head = source_tokens(*address_bytes(row["src_addr"])) + absolute_time(ts)
    else:
        head = later_time(ts, epoch_seconds(previous["event_time"]))
    return head + reference_body(row)


def later_time(ts: int, previous: int) -> list[int]:
    """The time of a run's later measurement: the delta to ``previous`` where shorter, else absolute."""
    delta = ts - previous
    if delta < 0:
        raise ValueError("a run's rows must be in time order")
    if delta < vocab.DELTA_COUNT:
        return [vocab.DELTA_BASE + delta]
    if delta < 1 << 16:
        return [vocab.DELTA16, *_be(delta, 2)]
    return absolute_time(ts)


def reference_records(rows: Sequence[Mapping], seq_len: int) -> list[list[int]]:
    """Per-row reference of a whole pack: ``rows`` in (source, time) order, laid greedily into records of
    ``seq_len`` (a record ends where the next row does not fit), each record's tokens without PAD."""
    out: list[list[int]] = []
    current: list[int] = []
    prev = None
    for row in rows:
        same = prev is not None and row["src_addr"] == prev["src_addr"]
        tokens = reference_measurement(row, prev if same and current else None)
        if len(current) + len(tokens) > seq_len:
            out.append(current)
            current = []
            tokens = reference_measurement(row, None)
        current += tokens
        prev = row
    if current:
        out.append(current)
    return out
