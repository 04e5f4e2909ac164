"""The seed's example row, shared by the tokenizer tests."""

from __future__ import annotations

import datetime as dt

UTC = dt.timezone.utc
SEED_TS = 1750766400  # 2025-06-24T12:00:00Z


def seed_row(**changes) -> dict:
    """The seed README's example measurement, with ``changes`` applied."""
    row = {
        "msm_id": 12345,
        "event_time": dt.datetime(2025, 6, 24, 12, 0, 0, tzinfo=UTC),
        "src_addr": "192.0.2.1",
        "dst_addr": "8.8.8.8",
        "ip_version": 4,
        "rtt": 42.5,
        "size": 64,
        "packet_error_count": 0,
    }
    row.update(changes)
    return row
