"""Rejection reasons and the exceptions that carry them.

A row that cannot be encoded faithfully is rejected, never altered. The per-row encoder raises
:class:`InvalidMeasurement`; the vectorized encoder reports the same reason string per row.
"""

from __future__ import annotations

# Reasons, in the order the checks run: when a row has several problems, the first one is reported
# by both encoders. The index in this tuple is the reason code used by the vectorized encoder (+1).
REASONS: tuple[str, ...] = (
    "null_msm_id",
    "msm_id_out_of_range",
    "null_event_time",
    "null_src_addr",
    "empty_src_addr",
    "malformed_src_addr",
    "null_dst_addr",
    "empty_dst_addr",
    "malformed_dst_addr",
    "null_ip_version",
    "invalid_ip_version",
    "ip_version_mismatch",
    "null_rtt",
    "non_finite_rtt",
    "null_size",
    "non_integral_size",
    "size_out_of_range",
    "null_packet_error_count",
    "non_integral_packet_error_count",
    "packet_error_count_out_of_range",
)
REASON_CODE = {reason: i + 1 for i, reason in enumerate(REASONS)}  # 0 means "accepted"

# The field each reason is about (the column to look at).
REASON_FIELD = {
    reason: next(
        f
        for f in ("msm_id", "event_time", "src_addr", "dst_addr", "ip_version", "rtt", "size", "packet_error_count")
        if f in reason
    )
    for reason in REASONS
}

REQUIRED_COLUMNS = (
    "msm_id",
    "event_time",
    "src_addr",
    "dst_addr",
    "ip_version",
    "rtt",
    "size",
    "packet_error_count",
)


class InvalidMeasurement(ValueError):
    """A measurement that cannot be encoded faithfully. ``field`` names the column, ``reason`` the check."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.field = REASON_FIELD[reason]
        msg = f"{self.field}: {reason}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class SchemaError(ValueError):
    """A table whose columns cannot be encoded at all (missing column or unsupported type)."""

    def __init__(self, column: str, problem: str):
        self.column = column
        super().__init__(f"column {column!r}: {problem}")


class DecodeError(ValueError):
    """A token sequence that is not a well-formed v1 measurement."""
