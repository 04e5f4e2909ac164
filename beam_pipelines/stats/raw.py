"""Statistics of raw Parquet ping rows: a mergeable per-batch summary and the report built from it.

Pure functions, no Beam: :func:`summarize_batch` turns one Arrow batch into a :class:`RawStats`
with numpy/pyarrow array operations; :meth:`RawStats.merge` adds two summaries (any order, any
grouping: the result is the same as one summary of all rows); :func:`raw_report` turns the final
summary into the ``report.json`` dictionary. The Beam job in :mod:`beam_pipelines.stats` is a thin
adapter around these.

Exactness: every count is exact. RTT quantiles and distinct counts are exact up to documented sizes
(``Limits``) and carry their error bound past them; see :mod:`beam_pipelines.stats.sketches`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import Counter

import numpy as np
import pyarrow as pa

from beam_pipelines.stats.sketches import KeyCounter, QuantileTable
from tokenizer import TOKENIZER_NAME, TOKENIZER_VERSION, validate_table
from tokenizer.errors import REASONS
from tokenizer.table import column_values

REPORT_VERSION = 1
PERCENTILES = (50, 90, 99)
CDF_PERCENTS = tuple(i / 2 for i in range(201))  # 0, 0.5, ..., 100: the RTT CDF kept in report.json
HISTOGRAM_BINS_PER_DECADE = 20
SIZE_MAX = 0xFFFF  # integral values 0..SIZE_MAX are counted one by one; others in named buckets
US_PER_DAY = 86_400_000_000
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}  # ns: divide by 1000 instead

QUANTILE_METHOD = (
    "nearest rank (the smallest value with at least p% of successful pings at or below it), from an exact "
    "table of distinct RTT values merged across batches; past {limit:,} distinct values the table becomes "
    "log-linear bins with exact counts, minima and maxima, and each quantile's rank error is at most the "
    "share of the bin it falls in (printed as rank_error_bound; 0 while exact)"
)
DISTINCT_METHOD = (
    "exact set of non-null values as written in the input, merged across batches, up to {limit:,} distinct "
    "values per column; past that a HyperLogLog sketch (2^14 registers, standard error 0.81%; the bound "
    "printed is 3 standard errors) and Misra-Gries top counts (each low by at most top_count_error)"
)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Sizes up to which the summaries stay exact (see :mod:`beam_pipelines.stats.sketches`)."""

    distinct: int = 1 << 20  # distinct keys per column kept exactly (msm_id, src_addr, dst_addr)
    quantile: int = 1 << 18  # distinct RTT values per IP version kept exactly
    top: int = 20  # entries in each top list


@dataclasses.dataclass
class RawStats:
    """Mergeable summary of raw ping rows. Every field is an exact count unless noted."""

    limits: Limits = dataclasses.field(default_factory=Limits)
    rows: int = 0
    ipv4_rows: int = 0
    ipv6_rows: int = 0
    other_ip_version_rows: int = 0  # ip_version null or not 4/6
    failed_rows: int = 0  # rtt < 0 (the seed's -1.0 marks a failed ping)
    successful_rows: int = 0  # finite rtt >= 0
    rtt_null_rows: int = 0
    rtt_not_finite_rows: int = 0  # NaN or +inf (-inf counts as failed)
    accepted_rows: int = 0  # rows the tokenizer would encode
    tokens: int = 0  # tokens of the accepted rows
    event_time_null_rows: int = 0
    event_time_min_us: int | None = None
    event_time_max_us: int | None = None
    per_day: dict = dataclasses.field(default_factory=dict)  # day -> int64[4]: rows, ipv4, ipv6, failed
    size_counts: Counter = dataclasses.field(default_factory=Counter)
    error_counts: Counter = dataclasses.field(default_factory=Counter)
    rejected: Counter = dataclasses.field(default_factory=Counter)  # tokenizer rejection reason -> rows
    rtt: dict = dataclasses.field(default_factory=dict)  # "4" / "6" / "other" -> QuantileTable
    msm_id: KeyCounter | None = None
    src_addr: KeyCounter | None = None
    dst_addr: KeyCounter | None = None

    def __post_init__(self):
        for family in ("4", "6", "other"):
            self.rtt.setdefault(family, QuantileTable(self.limits.quantile))
        self.msm_id = self.msm_id or KeyCounter("int", self.limits.distinct)
        self.src_addr = self.src_addr or KeyCounter("str", self.limits.distinct)
        self.dst_addr = self.dst_addr or KeyCounter("str", self.limits.distinct)

    def merge(self, other: RawStats) -> RawStats:
        """Add ``other`` into this summary (in place) and return it; ``other`` is only read."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.event_time_min_us is not None:
            self.event_time_min_us = min(v for v in (self.event_time_min_us, other.event_time_min_us) if v is not None)
            self.event_time_max_us = max(v for v in (self.event_time_max_us, other.event_time_max_us) if v is not None)
        for day, counts in other.per_day.items():
            self.per_day[day] = self.per_day[day] + counts if day in self.per_day else counts.copy()
        self.size_counts.update(other.size_counts)
        self.error_counts.update(other.error_counts)
        self.rejected.update(other.rejected)
        for family, table in other.rtt.items():
            self.rtt[family].merge(table)
        self.msm_id.merge(other.msm_id)
        self.src_addr.merge(other.src_addr)
        self.dst_addr.merge(other.dst_addr)
        return self

    def compact(self) -> RawStats:
        """Fold pending parts of the sketches (before the summary is shipped between workers)."""
        for table in self.rtt.values():
            table.compact()
        for counter in (self.msm_id, self.src_addr, self.dst_addr):
            counter.compact()
        return self

    def rtt_all(self) -> QuantileTable:
        """The RTT table over every successful ping, whatever its IP version."""
        out = self.rtt["4"].copy()
        out.merge(self.rtt["6"])
        out.merge(self.rtt["other"])
        return out


# The fields annotated plain ``int`` are the exact counts, which merge by addition (the optional
# minima and maxima, ``int | None``, merge by min and max).
_COUNTS = tuple(f.name for f in dataclasses.fields(RawStats) if f.type == "int")


# --- one batch -------------------------------------------------------------------------------------


def _column(batch, name: str) -> pa.Array:
    col = batch.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col


def value_buckets(col: pa.Array, hi: int = SIZE_MAX) -> Counter:
    """Exact counts of a size-like column: integral values 0..hi one by one, the rest in named buckets
    (``null``, ``non_integral`` for fractions, NaN and inf, ``negative``, ``> hi``)."""
    n = len(col)
    out: Counter = Counter()
    if pa.types.is_null(col.type):
        out["null"] = n
        return out
    if col.null_count:
        out["null"] = col.null_count
    valid = col.drop_null() if col.null_count else col
    v = valid.to_numpy(zero_copy_only=False)
    if np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(v) & (v == np.floor(v))
        if (~integral).any():
            out["non_integral"] = int((~integral).sum())
        v = v[integral]
        negative, big = v < 0, v > hi
    elif np.issubdtype(v.dtype, np.unsignedinteger):
        negative, big = np.zeros(len(v), dtype=bool), v > hi
    else:
        negative, big = v < 0, v > hi
    if negative.any():
        out["negative"] = int(negative.sum())
    if big.any():
        out[f"> {hi}"] = int(big.sum())
    keys, counts = np.unique(v[~negative & ~big].astype(np.int64), return_counts=True)
    out.update(dict(zip(keys.tolist(), counts.tolist())))
    return out


def _event_time_us(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(microseconds since the epoch, null mask); sub-microsecond parts are floored."""
    if pa.types.is_null(col.type):
        return np.zeros(len(col), np.int64), np.ones(len(col), dtype=bool)
    raw, null = column_values(col.cast(pa.int64()), np.int64, 0)
    scale = _US_PER_UNIT[col.type.unit]
    return (np.floor_divide(raw, 1000) if scale is None else raw * scale), null


def summarize_batch(batch: pa.RecordBatch | pa.Table, limits: Limits = Limits()) -> RawStats:
    """Summarize one batch of rows in the seed's schema (array operations only, no per-row Python)."""
    s = RawStats(limits)
    n = batch.num_rows
    s.rows = n
    if n == 0:
        return s

    version, version_null = column_values(_column(batch, "ip_version"), np.int64, 0)
    is4 = ~version_null & (version == 4)
    is6 = ~version_null & (version == 6)
    s.ipv4_rows, s.ipv6_rows = int(is4.sum()), int(is6.sum())
    s.other_ip_version_rows = n - s.ipv4_rows - s.ipv6_rows

    rtt_col = _column(batch, "rtt")
    rtt, rtt_null = column_values(
        rtt_col.cast(pa.float64()) if not pa.types.is_null(rtt_col.type) else rtt_col, np.float64, 0.0
    )
    with np.errstate(invalid="ignore"):
        failed = ~rtt_null & (rtt < 0)
        ok = ~rtt_null & np.isfinite(rtt) & (rtt >= 0)
    s.failed_rows, s.successful_rows = int(failed.sum()), int(ok.sum())
    s.rtt_null_rows = int(rtt_null.sum())
    s.rtt_not_finite_rows = n - s.failed_rows - s.successful_rows - s.rtt_null_rows
    s.rtt["4"].add(rtt[ok & is4])
    s.rtt["6"].add(rtt[ok & is6])
    s.rtt["other"].add(rtt[ok & ~is4 & ~is6])

    us, ts_null = _event_time_us(_column(batch, "event_time"))
    s.event_time_null_rows = int(ts_null.sum())
    has_ts = ~ts_null
    if has_ts.any():
        valid_us = us[has_ts]
        s.event_time_min_us, s.event_time_max_us = int(valid_us.min()), int(valid_us.max())
        days, inverse = np.unique(np.floor_divide(valid_us, US_PER_DAY), return_inverse=True)
        k = len(days)
        per_day = np.stack(
            [
                np.bincount(inverse, minlength=k),
                np.bincount(inverse[is4[has_ts]], minlength=k),
                np.bincount(inverse[is6[has_ts]], minlength=k),
                np.bincount(inverse[failed[has_ts]], minlength=k),
            ],
            axis=1,
        ).astype(np.int64)  # (days, 4)
        s.per_day = {int(d): per_day[i] for i, d in enumerate(days.tolist())}

    s.size_counts = value_buckets(_column(batch, "size"))
    s.error_counts = value_buckets(_column(batch, "packet_error_count"))

    s.msm_id.add(_column(batch, "msm_id"))
    s.src_addr.add(_column(batch, "src_addr"))
    s.dst_addr.add(_column(batch, "dst_addr"))

    # The tokenizer itself decides what it would reject, so the report can never disagree with pretokenize.
    checked = validate_table(batch)
    s.accepted_rows = len(checked.accepted)
    s.tokens = checked.tokens
    s.rejected = Counter(checked.reason_counts())
    return s


def merge_all(summaries, limits: Limits = Limits()) -> RawStats:
    """Merge summaries into a fresh one (the empty summary when there are none)."""
    out = RawStats(limits)
    for s in summaries:
        out.merge(s)
    return out


# --- the report ------------------------------------------------------------------------------------


def format_time_us(us: int | None) -> str | None:
    """ISO 8601 UTC with a ``Z``; fractional seconds only when there are any."""
    if us is None:
        return None
    try:
        t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)
    except OverflowError:
        return f"{us} us since the epoch"
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"


def format_day(day: int) -> str:
    try:
        return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
    except OverflowError:
        return f"day {day} since the epoch"


def _bucket_order(key) -> tuple:
    return (0, key, "") if isinstance(key, int) else (1, 0, str(key))


def _counts_json(counts: Counter) -> dict[str, int]:
    return {str(k): int(counts[k]) for k in sorted(counts, key=_bucket_order)}


def _rtt_json(table: QuantileTable, limits: Limits) -> dict:
    n = table.total
    out: dict = {"count": n}
    if n == 0:
        return out
    out["min"] = table.min()
    bounds = {}
    for p in PERCENTILES:
        out[f"p{p}"], bounds[f"p{p}"] = table.quantile(p)
    out["max"] = table.max()
    out["exact"] = table.exact
    out["rank_error_bound"] = bounds
    out["relative_bin_width"] = table.relative_bin_width
    out["cdf"] = {"percent": list(CDF_PERCENTS), "ms": table.quantiles(CDF_PERCENTS)[0]}
    return out


def rtt_histogram_edges(lo: float, hi: float) -> np.ndarray:
    """Log-spaced edges (``HISTOGRAM_BINS_PER_DECADE`` per decade) from the decade at or below ``lo``
    (at least 0.001 ms; smaller values, zero included, land in the first bin) past ``hi``."""
    start = math.floor(math.log10(max(lo, 1e-3)))
    stop = math.floor(math.log10(max(hi, 1e-3))) + 1
    return 10.0 ** (
        np.arange(start * HISTOGRAM_BINS_PER_DECADE, stop * HISTOGRAM_BINS_PER_DECADE + 1) / HISTOGRAM_BINS_PER_DECADE
    )


def _distinct_json(counter: KeyCounter) -> dict:
    return {
        "count": counter.distinct(),
        "exact": counter.exact,
        "relative_error_bound": counter.distinct_error_bound,
        "method": "exact set" if counter.exact else "HyperLogLog",
    }


def raw_report(stats: RawStats, inputs: list[dict], pattern: str) -> dict:
    """The ``report.json`` dictionary of a raw Parquet input (deterministic: no timings in it)."""
    stats.compact()
    limits = stats.limits
    rows = stats.rows
    rtt = stats.rtt_all()
    report: dict = {
        "report": "parquet",
        "report_version": REPORT_VERSION,
        "input": {"pattern": pattern, "files": inputs, "bytes": sum(i["bytes"] for i in inputs)},
        "rows": rows,
        "ipv4_rows": stats.ipv4_rows,
        "ipv6_rows": stats.ipv6_rows,
        "other_ip_version_rows": stats.other_ip_version_rows,
        "failed_rows": stats.failed_rows,
        "successful_rows": stats.successful_rows,
        "rtt_null_rows": stats.rtt_null_rows,
        "rtt_not_finite_rows": stats.rtt_not_finite_rows,
        "failure_rate": stats.failed_rows / rows if rows else None,
        "distinct_msm_id": stats.msm_id.distinct(),
        "distinct_src_addr": stats.src_addr.distinct(),
        "distinct_dst_addr": stats.dst_addr.distinct(),
        "distinct": {
            "msm_id": _distinct_json(stats.msm_id),
            "src_addr": _distinct_json(stats.src_addr),
            "dst_addr": _distinct_json(stats.dst_addr),
        },
        "event_time_min": format_time_us(stats.event_time_min_us),
        "event_time_max": format_time_us(stats.event_time_max_us),
        "event_time_null_rows": stats.event_time_null_rows,
        "days_with_rows": len(stats.per_day),
        "rtt_ms": _rtt_json(rtt, limits),
        "rtt_ms_by_ip_version": {
            fam: _rtt_json(stats.rtt[fam], limits)
            for fam in ("4", "6", "other")
            if fam != "other" or stats.rtt[fam].total
        },
        "size_counts": _counts_json(stats.size_counts),
        "packet_error_count_counts": _counts_json(stats.error_counts),
        "rows_per_day": {format_day(d): int(stats.per_day[d][0]) for d in sorted(stats.per_day)},
        "per_day": {
            format_day(d): dict(zip(("rows", "ipv4_rows", "ipv6_rows", "failed_rows"), map(int, stats.per_day[d])))
            for d in sorted(stats.per_day)
        },
        "tokenizer": {
            "name": TOKENIZER_NAME,
            "version": TOKENIZER_VERSION,
            "accepted_rows": stats.accepted_rows,
            "tokens": stats.tokens,
        },
        "rejected_rows": rows - stats.accepted_rows,
        "rejected_by_reason": {r: int(stats.rejected[r]) for r in REASONS if stats.rejected.get(r)},
        "top": {
            "msm_id": [{"value": k, "rows": c} for k, c in stats.msm_id.top(limits.top)],
            "src_addr": [{"value": k, "rows": c} for k, c in stats.src_addr.top(limits.top)],
            "dst_addr": [{"value": k, "rows": c} for k, c in stats.dst_addr.top(limits.top)],
        },
        "top_count_error": {
            "msm_id": stats.msm_id.count_error,
            "src_addr": stats.src_addr.count_error,
            "dst_addr": stats.dst_addr.count_error,
        },
        "methods": {
            "quantiles": QUANTILE_METHOD.format(limit=limits.quantile),
            "distinct": DISTINCT_METHOD.format(limit=limits.distinct),
            "limits": dataclasses.asdict(limits),
        },
    }
    if rtt.total:
        edges = rtt_histogram_edges(rtt.min(), rtt.max())
        report["rtt_ms_histogram"] = {"edges": edges.tolist(), "counts": rtt.histogram(edges).tolist()}
    return report
