"""Vectorized encoding of a whole Arrow table or record batch.

No per-row Python on the hot path: addresses are dictionary-encoded and each distinct address is
parsed once; validation, byte layout, field order and placement are numpy operations. The result
is exactly what :func:`tokenizer.measurement.encode_measurement` gives, row for row.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenizer import fields
from tokenizer.addresses import parse_unique
from tokenizer.errors import REASON_CODE, REASONS, REQUIRED_COLUMNS, SchemaError
from tokenizer.order import order_index_np
from tokenizer.spans import as_blocks, spans
from tokenizer.vocab import (
    BLOCK_ROLE,
    BYTE_OFFSET,
    IPV4_START,
    IPV6_START,
    MEASUREMENT_START,
    PERMUTATIONS,
    block_lengths,
    measurement_length,
)

_CHUNK_ROWS = 1 << 16  # rows per placement chunk: bounds the per-row temporaries (payload bytes, positions)
_UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclasses.dataclass(frozen=True)
class EncodedTable:
    """Result of :func:`encode_table`.

    ``tokens[offsets[i]:offsets[i+1]]`` are the tokens of input row ``accepted[i]``.
    """

    tokens: np.ndarray  # uint16, tokens of the accepted rows, concatenated in input order
    offsets: np.ndarray  # int64, (n_accepted + 1,)
    accepted: np.ndarray  # int64, input row index of each accepted row
    timestamp: np.ndarray  # int64, epoch seconds (floor, UTC) of each accepted row
    ip_version: np.ndarray  # int8, 4 or 6, of each accepted row
    src_words: np.ndarray  # uint64, (n_accepted, 2): source address as (high, low) 64-bit words
    rejected: np.ndarray  # int64, input row index of each rejected row
    reasons: np.ndarray  # object (str), rejection reason of each rejected row

    @property
    def num_rows(self) -> int:
        return len(self.accepted) + len(self.rejected)

    def reason_counts(self) -> dict[str, int]:
        """Rejected rows by reason."""
        return dict(sorted(Counter(self.reasons.tolist()).items()))


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) and not pa.types.is_float16(t)


def _is_str(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


_COLUMN_TYPES = {
    "msm_id": (_is_int, "an integer"),
    "event_time": (pa.types.is_timestamp, "a timestamp (any unit, with or without time zone)"),
    "src_addr": (_is_str, "a string"),
    "dst_addr": (_is_str, "a string"),
    "ip_version": (_is_int, "an integer"),
    "rtt": (_is_float, "float32 or float64"),
    "size": (lambda t: _is_int(t) or _is_float(t), "an integer or a float"),
    "packet_error_count": (lambda t: _is_int(t) or _is_float(t), "an integer or a float"),
}


def check_schema(schema: pa.Schema) -> None:
    """Raise :class:`SchemaError` naming the first required column that is missing or of a wrong type.

    Extra columns are allowed and ignored. A column of Arrow type ``null`` (all values null) is
    accepted: its rows are rejected one by one with the matching ``null_*`` reason.
    """
    for name in REQUIRED_COLUMNS:
        index = schema.get_field_index(name)
        if index < 0:
            raise SchemaError(name, f"missing (required columns: {', '.join(REQUIRED_COLUMNS)})")
        t = schema.field(index).type
        ok, expected = _COLUMN_TYPES[name]
        if not (pa.types.is_null(t) or ok(t)):
            raise SchemaError(name, f"has type {t}, expected {expected}")


def _column(table: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    col = table.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def column_values(col: pa.Array, dtype, fill=0) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls filled, null mask) as numpy arrays."""
    n = len(col)
    if pa.types.is_null(col.type):
        return np.full(n, fill, dtype=dtype), np.ones(n, dtype=bool)
    null = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else np.zeros(n, dtype=bool)
    if col.null_count:
        col = pc.fill_null(col, pa.scalar(fill, col.type))
    return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False), null


def _addresses(src: pa.Array, dst: pa.Array):
    """Per-row (status, unique index) for both address columns, parsing each distinct string once.

    Returns ``(src_status, src_idx, dst_status, dst_idx, packed, words)``: ``packed`` and ``words`` hold
    one row per parsed string (plus a last all-zero row that null indices point to).
    """
    n = len(src)
    dictionaries = _small_dictionaries(src, dst)
    if dictionaries is not None:
        # Columns read as dictionaries (the pretokenize job reads Parquet's own dictionary pages so): the
        # dictionaries are the distinct strings already, so neither the per-row strings nor their hashing
        # are needed; the dst dictionary's entries follow the src one's in the parsed table.
        uniques = dictionaries[0].to_pylist() + dictionaries[1].to_pylist()
        indices = [src.indices, pc.add(dst.indices.cast(pa.int64()), len(dictionaries[0]))]
    else:
        cols = []
        for col in (src, dst):
            if pa.types.is_null(col.type):
                col = pa.nulls(n, pa.large_string())
            elif pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            cols.append(col.cast(pa.large_string()))
        encoded = pc.dictionary_encode(pa.concat_arrays(cols))
        uniques = encoded.dictionary.to_pylist()
        indices = [encoded.indices[:n], encoded.indices[n:]]
    status, packed, words = parse_unique(uniques)
    # One extra "null" entry at the end so null indices can point somewhere.
    status = np.append(status, np.int8(0))
    packed = np.vstack([packed, np.zeros((1, 16), np.uint8)])
    words = np.vstack([words, np.zeros((1, 2), np.uint64)])
    out = []
    for index in indices:
        idx, null = column_values(index, np.int64)
        if null.any():
            idx = np.where(null, len(uniques), idx)
        out += [status[idx], idx]
    return (*out, packed, words)


def _small_dictionaries(src: pa.Array, dst: pa.Array) -> tuple[pa.Array, pa.Array] | None:
    """The dictionaries of two dictionary-encoded string columns, when neither has more entries than the
    batch has rows (a row group's dictionary can be far larger than one batch: then parsing the distinct
    strings of the batch is cheaper); otherwise None."""
    n = len(src)
    for col in (src, dst):
        if not (pa.types.is_dictionary(col.type) and _is_str(col.type.value_type) and len(col.dictionary) <= n):
            return None
    return src.dictionary, dst.dictionary


def _integral(col: pa.Array, null_reason, non_integral_reason, range_reason, hi, flag):
    """Validate a size-like column (integer or integral float in 0..hi); returns int64 values."""
    if pa.types.is_floating(col.type):
        vals, null = column_values(col, np.float64)
        flag(null, null_reason)
        with np.errstate(invalid="ignore"):
            flag(~np.isfinite(vals) | (vals != np.floor(vals)), non_integral_reason)
            flag((vals < 0) | (vals > hi), range_reason)
            return np.where(np.isfinite(vals) & (vals >= 0) & (vals <= hi), vals, 0).astype(np.int64)
    vals, null = column_values(col, np.int64) if not pa.types.is_uint64(col.type) else column_values(col, np.uint64)
    flag(null, null_reason)
    big = vals > hi if vals.dtype == np.uint64 else (vals < 0) | (vals > hi)
    flag(big, range_reason)
    return np.where(big, 0, vals).astype(np.int64)


_NOT_A_ROLE = np.uint16(0xFFFF)  # marks a byte position in a header template (above every token id)


@functools.lru_cache(maxsize=2)
def _layout(ip_version: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the blocks go in each of the 5040 orders of one address family.

    Returns ``positions``, (5040, 7) uint8: where each canonical block starts within the measurement,
    and ``headers``, (5040,) opaque ``V(2 * length)``: each order's measurement with MeasurementStart,
    the role and family tokens in place and :data:`_NOT_A_ROLE` at every byte position.
    """
    lengths = np.array(block_lengths(ip_version), dtype=np.intp)
    written = lengths[PERMUTATIONS]  # (5040, 7): lengths of the blocks in the order they are written
    starts = 1 + np.cumsum(written, axis=1) - written  # after MeasurementStart
    positions = np.empty_like(starts)
    np.put_along_axis(positions, PERMUTATIONS.astype(np.intp), starts, axis=1)
    headers = np.full((len(PERMUTATIONS), measurement_length(ip_version)), _NOT_A_ROLE, dtype=np.uint16)
    headers[:, 0] = MEASUREMENT_START
    rows = np.arange(len(PERMUTATIONS))
    for block in range(len(lengths)):
        headers[rows, positions[:, block]] = BLOCK_ROLE[block]
        if block < 2:  # the address blocks: the family token follows the role
            headers[rows, positions[:, block] + 1] = IPV4_START if ip_version == 4 else IPV6_START
    # < 69 fits a byte: a narrow table keeps the per-row copy small
    return positions.astype(np.uint8), as_blocks(headers.view(np.uint8))


@dataclasses.dataclass(frozen=True)
class Validation:
    """Result of :func:`validate_table`: which rows :func:`encode_table` would accept, without the tokens."""

    accepted: np.ndarray  # int64, input row index of each accepted row
    ip_version: np.ndarray  # int8, 4 or 6, of each accepted row
    rejected: np.ndarray  # int64, input row index of each rejected row
    reasons: np.ndarray  # object (str), rejection reason of each rejected row

    @property
    def tokens(self) -> int:
        """Tokens the accepted rows would take."""
        n4 = int(np.count_nonzero(self.ip_version == 4))
        return n4 * measurement_length(4) + (len(self.ip_version) - n4) * measurement_length(6)

    def reason_counts(self) -> dict[str, int]:
        """Rejected rows by reason."""
        return dict(sorted(Counter(self.reasons.tolist()).items()))


def validate_table(table: pa.Table | pa.RecordBatch) -> Validation:
    """The accept/reject decision of :func:`encode_table` (same rows, same reasons), without encoding.

    For reports that need to know what would be rejected but not the tokens (about twice as fast).
    """
    code, cols = _check(table)
    accepted = np.flatnonzero(code == 0)
    rejected = np.flatnonzero(code != 0)
    return Validation(
        accepted=accepted.astype(np.int64),
        ip_version=cols["ver"][accepted].astype(np.int8),
        rejected=rejected.astype(np.int64),
        reasons=np.array(REASONS, dtype=object)[code[rejected].astype(np.int64) - 1],
    )


def _check(table: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, dict]:
    """Reason code per row (0: accepted) and the decoded columns encoding needs."""
    check_schema(table.schema)
    n = table.num_rows
    code = np.zeros(n, dtype=np.int8)

    def flag(mask: np.ndarray, reason: str) -> None:
        # The first failing check wins, as in the per-row encoder.
        code[(code == 0) & mask] = REASON_CODE[reason]

    msm_col = _column(table, "msm_id")
    if pa.types.is_uint64(msm_col.type):
        raw, msm_null = column_values(msm_col, np.uint64)
        flag(msm_null, "null_msm_id")
        flag(raw > np.uint64(fields.MSM_ID.bounds[1]), "msm_id_out_of_range")
        msm = raw.view(np.int64)
    else:
        msm, msm_null = column_values(msm_col, np.int64)
        flag(msm_null, "null_msm_id")

    ts_col = _column(table, "event_time")
    if pa.types.is_null(ts_col.type):
        ts, ts_null = np.zeros(n, np.int64), np.ones(n, bool)
    else:
        ts, ts_null = column_values(ts_col.cast(pa.int64()), np.int64)
        ts = np.floor_divide(ts, _UNIT_PER_SECOND[ts_col.type.unit])
    flag(ts_null, "null_event_time")

    src_status, src_idx, dst_status, dst_idx, packed, words = _addresses(
        _column(table, "src_addr"), _column(table, "dst_addr")
    )
    for status, field in ((src_status, "src_addr"), (dst_status, "dst_addr")):
        flag(status == 0, f"null_{field}")
        flag(status == -1, f"empty_{field}")
        flag(status == -2, f"malformed_{field}")

    ver, ver_null = column_values(_column(table, "ip_version"), np.int64)
    flag(ver_null, "null_ip_version")
    flag((ver != 4) & (ver != 6), "invalid_ip_version")
    flag((src_status != ver) | (dst_status != ver), "ip_version_mismatch")

    rtt_col = _column(table, "rtt")
    rtt, rtt_null = column_values(rtt_col, np.float64)
    flag(rtt_null, "null_rtt")
    flag(~np.isfinite(rtt), "non_finite_rtt")

    size = _integral(
        _column(table, "size"), "null_size", "non_integral_size", "size_out_of_range", fields.SIZE.bounds[1], flag
    )
    errors = _integral(
        _column(table, "packet_error_count"),
        "null_packet_error_count",
        "non_integral_packet_error_count",
        "packet_error_count_out_of_range",
        fields.ERRORS.bounds[1],
        flag,
    )
    cols = dict(msm=msm, ts=ts, ver=ver, rtt=rtt, size=size, errors=errors, src_idx=src_idx, dst_idx=dst_idx)
    return code, dict(cols, packed=packed, words=words)


def encode_table(table: pa.Table | pa.RecordBatch) -> EncodedTable:
    """Encode every row of ``table``; rows that cannot be encoded faithfully are rejected with a reason.

    Raises :class:`SchemaError` when a required column is missing or of an unsupported type.
    """
    code, cols = _check(table)
    msm, ts, ver, rtt, size, errors = (cols[k] for k in ("msm", "ts", "ver", "rtt", "size", "errors"))
    src_idx, dst_idx, packed, words = cols["src_idx"], cols["dst_idx"], cols["packed"], cols["words"]
    accepted = np.flatnonzero(code == 0)
    rejected = np.flatnonzero(code != 0)
    reasons = np.array(REASONS, dtype=object)[code[rejected].astype(np.int64) - 1]

    acc_ver = ver[accepted].astype(np.int8)
    lengths = np.where(acc_ver == 4, measurement_length(4), measurement_length(6))
    offsets = np.zeros(len(accepted) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # No per-token index arrays: the payload bytes of each block are copied, one opaque value per row,
    # to their final positions in a byte buffer, and each row's header template (its order's role and
    # family tokens, _NOT_A_ROLE elsewhere) likewise into a token buffer; then one contiguous pass makes
    # the bytes byte tokens (+BYTE_OFFSET) and another keeps the header's token where it has one (the
    # smaller of the two: a role id is below every byte token).
    raw = np.empty(int(offsets[-1]), dtype=np.uint8)
    header = np.empty(int(offsets[-1]), dtype=np.uint16)
    word_hi, word_lo = np.ascontiguousarray(words[:, 0]), np.ascontiguousarray(words[:, 1])
    for family in (4, 6):
        block_positions, headers = _layout(family)
        address = as_blocks(packed[:, : 4 if family == 4 else 16])  # one opaque value per distinct address
        pos = np.flatnonzero(acc_ver == family)  # positions among accepted rows
        for lo in range(0, len(pos), _CHUNK_ROWS):
            p = pos[lo : lo + _CHUNK_ROWS]
            rows = accepted[p]
            src, dst = src_idx[rows], dst_idx[rows]
            starts = offsets[p]
            row_msm, row_ts, row_rtt, row_size, row_errors = msm[rows], ts[rows], rtt[rows], size[rows], errors[rows]
            hash_words = [
                row_msm.view(np.uint64),
                row_ts.view(np.uint64),
                row_rtt.view(np.uint64),
                word_hi[src],
                word_lo[src],
                word_hi[dst],
                word_lo[dst],
                (row_size | row_errors << 16 | family << 24).astype(np.uint64),
            ]
            order = order_index_np(hash_words)
            positions = block_positions[order]  # (rows, 7)
            payloads = (  # in canonical block order; the byte formats are tokenizer.fields'
                address[src],
                address[dst],
                as_blocks(fields.RTT.to_bytes(row_rtt)),
                as_blocks(fields.SIZE.to_bytes(row_size)),
                as_blocks(fields.ERRORS.to_bytes(row_errors)),
                as_blocks(fields.TIMESTAMP.to_bytes(row_ts)),
                as_blocks(fields.MSM_ID.to_bytes(row_msm)),
            )
            for block, payload in enumerate(payloads):
                skip = 2 if block < 2 else 1  # the role (and family) tokens before the bytes
                spans(raw, payload.dtype.itemsize)[starts + positions[:, block] + skip] = payload
            spans(header, headers.dtype.itemsize)[2 * starts] = headers[order]
    tokens = np.add(raw, BYTE_OFFSET, dtype=np.uint16)
    np.minimum(tokens, header, out=tokens)

    return EncodedTable(
        tokens=tokens,
        offsets=offsets,
        accepted=accepted.astype(np.int64),
        timestamp=ts[accepted],
        ip_version=acc_ver,
        src_words=words[src_idx[accepted]],
        rejected=rejected.astype(np.int64),
        reasons=reasons,
    )
