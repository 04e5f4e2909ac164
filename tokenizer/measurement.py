"""Per-row encoding and decoding of one measurement (the reference implementation).

The vectorized :func:`tokenizer.table.encode_table` must give exactly the tokens that
:func:`encode_measurement` gives, row for row; tests hold the two together.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

import numpy as np

from tokenizer import fields
from tokenizer.addresses import address_words, format_address, parse_address
from tokenizer.errors import DecodeError, InvalidMeasurement
from tokenizer.order import MASK64, order_index
from tokenizer.vocab import MEASUREMENT_START, PAD, PERMUTATIONS

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def epoch_seconds(value: object) -> int:
    """Floor of epoch seconds of a timestamp. A naive datetime is UTC, never local time."""
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[s]").astype(np.int64))  # numpy floors toward -inf
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
        delta = aware - _EPOCH
        # timedelta normalises to days + 0 <= seconds < 86400 + microseconds >= 0, so this is a floor.
        return delta.days * 86400 + delta.seconds
    raise TypeError(f"event_time: unsupported type {type(value).__name__}")


def _is_integer(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _integral(value: object, null: str, non_integral: str, out_of_range: str, lo: int, hi: int) -> int:
    if value is None:
        raise InvalidMeasurement(null)
    if isinstance(value, (float, np.floating)):
        if not float(value).is_integer():
            raise InvalidMeasurement(non_integral, repr(value))
        value = int(value)
    elif not _is_integer(value):
        raise InvalidMeasurement(non_integral, f"not a number: {value!r}")  # never coerce text
    value = int(value)
    if not lo <= value <= hi:
        raise InvalidMeasurement(out_of_range, str(value))
    return value


def _address(row: Mapping, field: str) -> tuple[int, bytes]:
    parsed = parse_address(row.get(field))
    if isinstance(parsed, str):
        raise InvalidMeasurement(f"{parsed}_{field}", repr(row.get(field)))
    return parsed


def encode_measurement(row: Mapping) -> list[int]:
    """Encode one measurement (a mapping with the seed's columns) into v1 tokens.

    Raises :class:`~tokenizer.errors.InvalidMeasurement` (a ``ValueError``) naming the field when the
    row cannot be encoded faithfully. ``rtt = -1.0`` (a failed ping) is valid.
    """
    msm_id = row.get("msm_id")
    if msm_id is None:
        raise InvalidMeasurement("null_msm_id")
    if not _is_integer(msm_id):
        # Outside the int64 domain in the widest sense: text or fractions are never coerced.
        raise InvalidMeasurement("msm_id_out_of_range", f"not an integer: {msm_id!r}")
    msm_id = int(msm_id)
    lo, hi = fields.MSM_ID.bounds
    if not lo <= msm_id <= hi:
        raise InvalidMeasurement("msm_id_out_of_range", str(msm_id))
    if row.get("event_time") is None:
        raise InvalidMeasurement("null_event_time")
    ts = epoch_seconds(row["event_time"])
    src_version, src = _address(row, "src_addr")
    dst_version, dst = _address(row, "dst_addr")
    ip_version = row.get("ip_version")
    if ip_version is None:
        raise InvalidMeasurement("null_ip_version")
    if not _is_integer(ip_version) or int(ip_version) not in (4, 6):
        raise InvalidMeasurement("invalid_ip_version", repr(ip_version))
    ip_version = int(ip_version)
    if src_version != ip_version or dst_version != ip_version:
        raise InvalidMeasurement(
            "ip_version_mismatch", f"ip_version={ip_version}, src is IPv{src_version}, dst is IPv{dst_version}"
        )
    rtt = row.get("rtt")
    if rtt is None:
        raise InvalidMeasurement("null_rtt")
    rtt = float(rtt)
    if not math.isfinite(rtt):
        raise InvalidMeasurement("non_finite_rtt", repr(rtt))
    size = _integral(row.get("size"), "null_size", "non_integral_size", "size_out_of_range", *fields.SIZE.bounds)
    errors = _integral(
        row.get("packet_error_count"),
        "null_packet_error_count",
        "non_integral_packet_error_count",
        "packet_error_count_out_of_range",
        *fields.ERRORS.bounds,
    )

    rtt_raw = fields.RTT.pack(rtt)
    blocks = (  # canonical block order
        fields.SRC.encode(src),
        fields.DST.encode(dst),
        fields.RTT.block_of(rtt_raw),
        fields.SIZE.encode(size),
        fields.ERRORS.encode(errors),
        fields.TIMESTAMP.encode(ts),
        fields.MSM_ID.encode(msm_id),
    )
    words = [
        msm_id & MASK64,
        ts & MASK64,
        int.from_bytes(rtt_raw, "big"),
        *address_words(src),
        *address_words(dst),
        size | errors << 16 | ip_version << 24,
    ]
    tokens = [MEASUREMENT_START]
    for block in PERMUTATIONS[order_index(words)]:
        tokens.extend(blocks[block])
    return tokens


def decode_measurement(tokens: Sequence[int]) -> dict:
    """Exact inverse of :func:`encode_measurement`.

    Returns ``msm_id``, ``event_time`` (aware UTC datetime, whole seconds), ``src_addr`` and
    ``dst_addr`` (canonical text), ``ip_version``, ``rtt`` (bit-exact float64), ``size`` and
    ``packet_error_count``. Raises :class:`~tokenizer.errors.DecodeError` on a malformed sequence.
    """
    tokens = [int(t) for t in tokens]
    if not tokens or tokens[0] != MEASUREMENT_START:
        raise DecodeError("a measurement must start with MeasurementStart (0)")
    out: dict = {}
    versions = []
    seen: set[int] = set()
    i = 1
    while i < len(tokens):
        role = tokens[i]
        if role in seen:
            raise DecodeError(f"repeated block (role {role}) at position {i}")
        seen.add(role)
        codec = fields.BY_ROLE.get(role)
        if codec is None:
            raise DecodeError(f"unexpected token {role} at position {i}")
        if isinstance(codec, fields.AddressCodec):
            version, packed = codec.decode(tokens, i)
            out[codec.name] = format_address(version, packed)
            versions.append(version)
            i += codec.length(version)
        elif codec is fields.TIMESTAMP:
            out["event_time"] = _EPOCH + dt.timedelta(seconds=codec.decode(tokens, i))
            i += codec.length
        else:
            out[codec.name] = codec.decode(tokens, i)
            i += codec.length
    expected = {"msm_id", "event_time", "src_addr", "dst_addr", "rtt", "size", "packet_error_count"}
    if set(out) != expected or len(versions) != 2 or versions[0] != versions[1]:
        raise DecodeError(f"incomplete or inconsistent measurement: fields {sorted(out)}, families {versions}")
    out["ip_version"] = versions[0]
    return out


def split_measurements(record: np.ndarray) -> list[np.ndarray]:
    """Cut a record (whole measurements followed by PAD) into its measurements."""
    record = np.asarray(record)
    pad_at = np.flatnonzero(record == PAD)
    end = int(pad_at[0]) if len(pad_at) else len(record)
    if len(pad_at) and not np.all(record[end:] == PAD):
        raise DecodeError("PAD is only allowed as a suffix of a record")
    body = record[:end]
    starts = np.flatnonzero(body == MEASUREMENT_START)
    if end and (len(starts) == 0 or starts[0] != 0):
        raise DecodeError("a record must start with MeasurementStart")
    return np.split(body, starts[1:]) if end else []
