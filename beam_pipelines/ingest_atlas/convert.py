"""RIPE Atlas ping results (parsed JSON) -> rows of the ingest schema. Pure functions, no I/O, no Beam.

One ping result becomes one row (``rtt="min"`` or ``"avg"``) or one row per packet (``rtt="each"``)
in :data:`ROW_SCHEMA`: the seed's eight columns first, then the other useful fields of the result.
A result that cannot become a row raises :class:`RejectedResult` with a reason from :data:`REASONS`;
a JSON object of another type (traceroute, dns, ...) raises :class:`SkippedResult` with its type.

Layouts handled, as found in the daily dumps and the API over the years (see
``shared/data/atlas/SOURCES.md``): firmware 0/1 (``addr``/``name`` instead of ``dst_addr``/``dst_name``,
numbers as strings, no ``af``, no ``result`` list but ``sent``/``rcvd``/``min``/``avg``), ``srcaddr`` in
entries, ``late``/``dup``/``ttl``/``error`` entries, keys with a leading or trailing space, ``sent = 0``.

Semantics (docs/ingest.md, "ingest_atlas", has the long form):

* ``rtt``: ``min`` the smallest reply RTT (ms), ``avg`` the mean of the replies, ``-1.0`` when no reply
  came; ``each`` one row per packet with its RTT or ``-1.0``. Duplicate replies (``dup`` entries) are not
  replies to a packet of their own, so, as in RIPE's own ``min``/``avg``/``rcvd``, they are left out.
* ``packet_error_count``: entries of ``result`` without an ``rtt`` (timeouts ``{"x": "*"}``, ``error``
  and ``late`` entries); without a ``result`` list (firmware 0/1), ``sent - rcvd``. With ``each``,
  0 for a packet that got a reply and 1 for one that did not. An empty list (``"result": []``) has
  no entry: rtt ``-1.0``, 0 errors, and no row at all with ``each`` (counted as ``without_rows``).
* ``src_addr``: ``from`` (the probe's public address), else the probe's local ``src_addr``
  (``src="from"``, the default); the local one only with ``src="src_addr"``. Both keep their own columns.
* ``ip_version``: ``af``; without ``af``, from the destination address's text.
"""

from __future__ import annotations

import ipaddress
import math

import orjson
import pyarrow as pa

from beam_pipelines.common.schema import SEED_FIELDS

ROW_SCHEMA = pa.schema(
    [
        # The seed's columns, in its order: what the tokenizer reads.
        *SEED_FIELDS,
        # The rest of the result, as given (null when the result lacks the field).
        ("prb_id", pa.int64()),
        ("from_addr", pa.string()),  # `from`: the probe's public address
        ("probe_src_addr", pa.string()),  # `src_addr` (or the first entry's `srcaddr`): the probe's local address
        ("dst_name", pa.string()),
        ("sent", pa.int64()),
        ("rcvd", pa.int64()),
        ("dup", pa.int64()),
        ("ttl", pa.int64()),  # of the reply (`each`) or the result's (`min`/`avg`)
        ("fw", pa.int64()),
    ]
)
COLUMNS: tuple[str, ...] = tuple(ROW_SCHEMA.names)

REJECTED_SCHEMA = pa.schema(
    [
        ("file", pa.string()),  # the input path as matched by --input
        ("line_number", pa.int64()),  # 1-based line in the (decompressed) file; element number in a JSON array
        ("reason", pa.string()),
        ("raw_line", pa.string()),  # UTF-8, invalid bytes escaped as \xNN; cut at RAW_LIMIT bytes
    ]
)

RTT_MODES = ("min", "avg", "each")
SRC_MODES = ("from", "src_addr")

# Why a line did not become a row. Every reason is counted in the summary and the manifest.
REASONS: tuple[str, ...] = (
    "invalid_json",  # not parseable as JSON
    "line_too_long",  # longer than MAX_LINE_BYTES: not a ping result, and not worth holding in memory
    "not_an_object",  # valid JSON but not an object (a number, a string, ...)
    "missing_type",  # an object without `type`: not recognisable as a RIPE Atlas result
    "missing_msm_id",
    "invalid_msm_id",
    "missing_timestamp",
    "invalid_timestamp",
    "missing_dst_addr",  # neither `dst_addr` nor `addr` (e.g. a failed name resolution)
    "invalid_dst_addr",
    "missing_src_addr",  # no source address for the chosen --src (e.g. `sent = 0`, no network)
    "invalid_src_addr",
    "invalid_af",
    "unknown_ip_version",  # no `af` and a destination that looks like neither IPv4 nor IPv6
    "missing_size",
    "invalid_size",
    "missing_result",  # no `result` list and no `sent`/`rcvd` to count packets from
    "invalid_result",
    "invalid_rtt",
    "missing_rtt",  # a result without a `result` list that reports replies but no `min`/`avg`
    "invalid_field",  # one of the other numeric fields (prb_id, fw, sent, rcvd, dup, ttl) is not a number
)

MAX_LINE_BYTES = 8 << 20  # a ping result is about 500 bytes; even a 16-packet one with errors stays < 10 KB
RAW_LIMIT = 64 << 10  # bytes of a rejected line kept in raw_line

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_MAX_SECONDS = _INT64_MAX // 1_000_000  # event_time is int64 microseconds


class RejectedResult(ValueError):
    """A JSON value that cannot become a row; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason} ({detail})" if detail else reason)


class SkippedResult(Exception):
    """A RIPE Atlas result of another type than ``ping``; ``type`` says which."""

    def __init__(self, kind: str):
        self.type = kind
        super().__init__(kind)


# --- value coercion: the fast path is one `type(v) is ...` test; old firmware sends strings ----------


def _number(value, reason: str) -> float | int:
    if type(value) is str:
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise RejectedResult(reason, repr(value)) from None
        return int(number) if number.is_integer() else number
    if type(value) in (int, float):  # bool is not a number here
        return value
    raise RejectedResult(reason, repr(value))


def _int(value, reason: str) -> int:
    """An int64 from an int, an integral float or a numeric string; raises ``RejectedResult(reason)``."""
    if type(value) is not int:
        value = _number(value, reason)
        if type(value) is float:
            if not value.is_integer():
                raise RejectedResult(reason, repr(value))
            value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise RejectedResult(reason, repr(value))
    return value


def _opt_int(value, reason: str = "invalid_field") -> int | None:
    if value is None:
        return None
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return _int(value, reason)


def _float(value, reason: str) -> float:
    if type(value) is float:
        return value
    return float(_number(value, reason))


def _opt_str(value, reason: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise RejectedResult(reason, repr(value))


def needs_key_cleanup(raw: bytes | str) -> bool:
    """Whether the raw JSON text may hold a key with a leading or trailing space (``" proto"``).

    Compact RIPE JSON never has a quote followed by a space, nor a space followed by ``":``; checking the
    text is much cheaper than checking every key of every result, and most lines have no space at all.
    """
    if type(raw) is str:
        return " " in raw and ('" ' in raw or ' ":' in raw)
    return b" " in raw and (b'" ' in raw or b' ":' in raw)


def clean_keys(obj: dict) -> dict:
    """``obj`` with surrounding spaces stripped from its keys and its result entries' keys.

    An exact key wins over a spaced duplicate (``{"lts": 1, " lts": 2}`` keeps 1).
    """

    def clean(d: dict) -> dict:
        out = {k: v for k, v in d.items() if type(k) is not str or k == k.strip()}
        for k, v in d.items():
            if type(k) is str and k != k.strip():
                out.setdefault(k.strip(), v)
        return out

    obj = clean(obj)
    result = obj.get("result")
    if type(result) is list:
        obj["result"] = [clean(e) if type(e) is dict else e for e in result]
    return obj


def convert_result(obj, rtt: str = "min", src: str = "from") -> list[tuple]:
    """Rows (tuples in :data:`COLUMNS` order, ``event_time`` as int epoch microseconds) of one parsed result.

    Raises :class:`RejectedResult` or :class:`SkippedResult`. Keys are used as given: call
    :func:`clean_keys` first on a result whose keys may carry spaces (see :func:`needs_key_cleanup`).
    With ``rtt="each"`` a result whose ``result`` list holds no packet gives no row.
    """
    if type(obj) is not dict:
        raise RejectedResult("not_an_object", type(obj).__name__)
    kind = obj.get("type")
    if kind != "ping":
        if kind is None:
            raise RejectedResult("missing_type")
        raise SkippedResult(kind if type(kind) is str else repr(kind))

    get = obj.get
    msm_id = get("msm_id")
    if type(msm_id) is not int or not 0 <= msm_id <= _INT64_MAX:
        if msm_id is None:
            raise RejectedResult("missing_msm_id")
        msm_id = _int(msm_id, "invalid_msm_id")
    seconds = get("timestamp")
    if type(seconds) is not int or not 0 <= seconds <= _MAX_SECONDS:
        if seconds is None:
            raise RejectedResult("missing_timestamp")
        seconds = _int(seconds, "invalid_timestamp")
        if not -_MAX_SECONDS <= seconds <= _MAX_SECONDS:
            raise RejectedResult("invalid_timestamp", repr(seconds))

    dst = get("dst_addr") or get("addr")  # fw 0/1 call it `addr`
    if not dst:
        raise RejectedResult("missing_dst_addr")
    if type(dst) is not str:
        raise RejectedResult("invalid_dst_addr", repr(dst))

    result = get("result")
    from_addr = get("from")
    if type(from_addr) is not str:
        from_addr = _opt_str(from_addr, "invalid_src_addr")
    local = get("src_addr")
    if not local and type(result) is list:
        # Old firmware put the local address in the entries (`srcaddr`) rather than in the result.
        for entry in result:
            if type(entry) is dict and entry.get("srcaddr"):
                local = entry["srcaddr"]
                break
    if type(local) is not str:
        local = _opt_str(local, "invalid_src_addr")
    src_addr = (from_addr or local) if src == "from" else local
    if not src_addr:
        raise RejectedResult("missing_src_addr", f"--src {src}")

    af = get("af")
    if af == 4 or af == 6:
        ip_version = _int(af, "invalid_af")
    elif af is None:
        try:  # rare (fw 0/1): parse the destination rather than guess from its text
            ip_version = ipaddress.ip_address(dst).version
        except ValueError:
            raise RejectedResult("unknown_ip_version", repr(dst)) from None
    else:
        ip_version = _int(af, "invalid_af")

    size = get("size")
    if type(size) is not int or not 0 <= size <= 0xFFFF:
        if size is None:
            raise RejectedResult("missing_size")
        size = _int(size, "invalid_size")

    sent = _opt_int(get("sent"))
    rcvd = _opt_int(get("rcvd"))
    dup = _opt_int(get("dup"))
    ttl = _opt_int(get("ttl"))
    prb_id = _opt_int(get("prb_id"))
    fw = _opt_int(get("fw"))
    dst_name = get("dst_name") or get("name")
    if type(dst_name) is not str:
        dst_name = None if dst_name is None else str(dst_name)
    event_us = seconds * 1_000_000

    if type(result) is list:
        if rtt == "each":
            rows = []
            for entry in result:
                value = entry.get("rtt") if type(entry) is dict else None
                if value is None:
                    rows.append(
                        (msm_id, event_us, src_addr, dst, ip_version, -1.0, size, 1,
                         prb_id, from_addr, local, dst_name, sent, rcvd, dup, None, fw)
                    )  # fmt: skip
                    continue
                if type(value) is not float:
                    value = _float(value, "invalid_rtt")
                if entry.get("dup"):
                    continue
                entry_ttl = entry.get("ttl")
                entry_ttl = ttl if entry_ttl is None else _opt_int(entry_ttl)
                rows.append(
                    (msm_id, event_us, src_addr, dst, ip_version, value, size, 0,
                     prb_id, from_addr, local, dst_name, sent, rcvd, dup, entry_ttl, fw)
                )  # fmt: skip
            return rows
        replies = []
        errors = 0
        for entry in result:
            value = entry.get("rtt") if type(entry) is dict else None
            if value is None:
                errors += 1  # timeout, error or late entry
                continue
            if type(value) is not float:
                value = _float(value, "invalid_rtt")
            if not entry.get("dup"):
                replies.append(value)
        if not replies:
            value = -1.0
        elif rtt == "min":
            value = min(replies)
        else:
            value = math.fsum(replies) / len(replies)
    elif result is None:
        # fw 0/1: no per-packet list, only the summary.
        if sent is None or rcvd is None:
            raise RejectedResult("missing_result")
        errors = sent - rcvd
        if rcvd > 0:
            summary = get("avg" if rtt == "avg" else "min")
            if summary is None:
                raise RejectedResult("missing_rtt")
            value = _float(summary, "invalid_rtt")
        else:
            value = -1.0
    else:
        raise RejectedResult("invalid_result", type(result).__name__)

    return [
        (msm_id, event_us, src_addr, dst, ip_version, value, size, errors,
         prb_id, from_addr, local, dst_name, sent, rcvd, dup, ttl, fw)
    ]  # fmt: skip


def row_dicts(rows: list[tuple]) -> list[dict]:
    """Rows from :func:`convert_result` as dicts keyed by column name (for tests and debugging)."""
    return [dict(zip(COLUMNS, row)) for row in rows]


def parse_and_convert(raw: bytes | str, rtt: str = "min", src: str = "from") -> list[tuple]:
    """Parse one JSON text and convert it; raises :class:`RejectedResult` or :class:`SkippedResult`."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RejectedResult("invalid_json", str(exc)) from None
    if type(obj) is dict and needs_key_cleanup(raw):
        obj = clean_keys(obj)
    return convert_result(obj, rtt, src)


def rows_to_batch(rows: list[tuple]) -> pa.RecordBatch:
    """A RecordBatch in :data:`ROW_SCHEMA` from row tuples (column-wise conversion in Arrow's C++)."""
    columns = list(zip(*rows)) if rows else [()] * len(COLUMNS)
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, ROW_SCHEMA)], schema=ROW_SCHEMA
    )


def raw_text(raw: bytes | str) -> str:
    """What goes into ``raw_line``: the text of a rejected line, cut at :data:`RAW_LIMIT` bytes."""
    if type(raw) is str:
        raw = raw.encode("utf-8", "surrogatepass")
    cut = raw[:RAW_LIMIT]
    return cut.decode("utf-8", "backslashreplace")
