"""Raw summaries and report.json figures against independent computations, without Beam."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from beam_pipelines.stats.raw import Limits, RawStats, merge_all, raw_report, summarize_batch, value_buckets


def report_of(tables, chunk: int, limits: Limits | None = None) -> dict:
    """Summaries of ``chunk``-row batches, merged in a scrambled order, as Beam may."""
    limits = limits or Limits()
    parts = [summarize_batch(b, limits) for t in tables for b in t.to_batches(max_chunksize=chunk)]
    order = np.random.default_rng(chunk).permutation(len(parts))
    return raw_report(merge_all((parts[i] for i in order), limits), [], "test")


@pytest.mark.parametrize("chunk", [500, 1777, 100_000])
def test_report_matches_row_by_row_computation(dirty, chunk, helpers):
    report = report_of([dirty], chunk)
    helpers.check_against(report, helpers.expected_raw(dirty))
    assert report["rtt_ms"]["exact"] and all(d["exact"] for d in report["distinct"].values())


def test_other_column_types(dirty, helpers):
    t = helpers.other_types(dirty)
    helpers.check_against(report_of([t], 1000), helpers.expected_raw(t))


def test_batching_does_not_change_the_report(dirty):
    a = json.dumps(report_of([dirty], 333), sort_keys=True)
    b = json.dumps(report_of([dirty], 6000), sort_keys=True)
    assert a == b


def test_binned_quantiles_and_sketched_distinct_counts_do_not_depend_on_batching(dirty):
    limits = Limits(distinct=10, quantile=50)
    a, b = report_of([dirty], 333, limits), report_of([dirty], 2500, limits)
    assert not a["rtt_ms"]["exact"]
    assert a["rtt_ms"] == b["rtt_ms"] and a["rtt_ms_by_ip_version"] == b["rtt_ms_by_ip_version"]
    assert a["distinct"] == b["distinct"]


def test_past_the_exact_limits_bounds_hold(helpers):
    t = helpers.dirty_table(8000, seed=3)
    limits = Limits(distinct=10, quantile=50, top=5)
    report = report_of([t], 900, limits)
    exp = helpers.expected_raw(t, per_row_reasons=False)
    assert not report["rtt_ms"]["exact"]
    for column, key in (
        ("src_addr", "distinct_src_addr"),
        ("dst_addr", "distinct_dst_addr"),
        ("msm_id", "distinct_msm_id"),
    ):
        d = report["distinct"][column]
        if exp[key] <= limits.distinct:
            assert d["exact"] and d["count"] == exp[key]
            continue
        assert not d["exact"] and d["method"] == "HyperLogLog"
        assert abs(d["count"] - exp[key]) <= d["relative_error_bound"] * exp[key]
    # Misra-Gries: reported counts are low by at most top_count_error, never high.
    assert not report["distinct"]["src_addr"]["exact"]
    for column, counts in (
        ("msm_id", exp["msm_counts"]),
        ("src_addr", exp["src_counts"]),
        ("dst_addr", exp["dst_counts"]),
    ):
        err = report["top_count_error"][column]
        for e in report["top"][column]:
            assert counts[e["value"]] - err <= e["rows"] <= counts[e["value"]]
    helpers.check_against(
        report, exp | {k: report[k] for k in ("distinct_msm_id", "distinct_src_addr", "distinct_dst_addr")}
    )


def test_value_buckets():
    assert value_buckets(pa.array([64, 64, None, -1, 70000, 0], pa.int64())) == {
        64: 2,
        "null": 1,
        "negative": 1,
        "> 65535": 1,
        0: 1,
    }
    assert value_buckets(pa.array([64.0, 64.5, float("nan"), float("inf"), None])) == {
        64: 1,
        "non_integral": 3,
        "null": 1,
    }
    assert value_buckets(pa.array([2**64 - 1, 3], pa.uint64())) == {"> 65535": 1, 3: 1}
    assert value_buckets(pa.nulls(3)) == {"null": 3}


def test_null_typed_columns_and_empty_batches():
    t = pa.table(
        {
            "msm_id": pa.nulls(3),
            "event_time": pa.nulls(3),
            "src_addr": pa.nulls(3),
            "dst_addr": pa.array(["8.8.8.8"] * 3),
            "ip_version": pa.nulls(3),
            "rtt": pa.nulls(3),
            "size": pa.nulls(3),
            "packet_error_count": pa.array([0, 0, 0]),
        }
    )
    r = raw_report(merge_all([summarize_batch(t), summarize_batch(t.slice(0, 0))]), [], "x")
    assert r["rows"] == 3 and r["rtt_null_rows"] == 3 and r["other_ip_version_rows"] == 3
    assert r["distinct_msm_id"] == 0 and r["distinct_dst_addr"] == 1 and r["event_time_min"] is None
    assert r["rtt_ms"] == {"count": 0} and r["rejected_by_reason"] == {"null_msm_id": 3}
    json.dumps(r, allow_nan=False)


def test_empty_report_is_valid_json():
    r = raw_report(RawStats(), [], "x")
    assert r["rows"] == 0 and r["failure_rate"] is None
    json.dumps(r, allow_nan=False)


def test_timestamps_before_1970_and_sub_second_floor(helpers):
    t = helpers.dirty_table(10, seed=1).slice(0, 2)
    times = pa.array(
        [dt.datetime(1969, 12, 31, 23, 59, 59, 500000), dt.datetime(2025, 1, 1, 0, 0, 0, 1)],
        pa.timestamp("us", tz="UTC"),
    )
    t = t.set_column(1, "event_time", times)
    r = raw_report(summarize_batch(t), [], "x")
    assert r["event_time_min"] == "1969-12-31T23:59:59.500000Z"
    assert r["event_time_max"] == "2025-01-01T00:00:00.000001Z"
    assert list(r["rows_per_day"]) == ["1969-12-31", "2025-01-01"]


def test_cdf_is_monotonic_and_spans_min_to_max(dirty):
    r = report_of([dirty], 2000)
    for t in r["rtt_ms_by_ip_version"].values():
        ms = t["cdf"]["ms"]
        assert ms == sorted(ms) and ms[0] == t["min"] and ms[-1] == t["max"]
        assert not any(math.isnan(v) for v in ms)
    h = r["rtt_ms_histogram"]
    assert sum(h["counts"]) == r["rtt_ms"]["count"] and len(h["edges"]) == len(h["counts"]) + 1


def test_merge_adds_every_count_and_keeps_time_bounds(dirty):
    """Every plain-int field is a count that adds on merge; the event time bounds merge by min and max."""
    half = dirty.num_rows // 2
    a, b = summarize_batch(dirty.slice(0, half)), summarize_batch(dirty.slice(half))
    counts = {f.name for f in dataclasses.fields(RawStats) if f.type == "int"}
    assert {"rows", "accepted_rows", "tokens", "failed_rows", "event_time_null_rows"} <= counts
    assert not counts & {"event_time_min_us", "event_time_max_us"}
    expected = {name: getattr(a, name) + getattr(b, name) for name in counts}
    bounds = (min(a.event_time_min_us, b.event_time_min_us), max(a.event_time_max_us, b.event_time_max_us))
    merged = merge_all([a, b])
    assert {name: getattr(merged, name) for name in counts} == expected
    assert (merged.event_time_min_us, merged.event_time_max_us) == bounds
    assert merged.rows == dirty.num_rows
