"""The seed's Parquet schema: the columns the tokenizer reads, with the types the seed's export has."""

from __future__ import annotations

import pyarrow as pa

SEED_FIELDS = (
    pa.field("msm_id", pa.int64()),
    pa.field("event_time", pa.timestamp("us", tz="UTC")),
    pa.field("src_addr", pa.string()),
    pa.field("dst_addr", pa.string()),
    pa.field("ip_version", pa.int64()),
    pa.field("rtt", pa.float64()),
    pa.field("size", pa.int64()),
    pa.field("packet_error_count", pa.int64()),
)
SEED_SCHEMA = pa.schema(SEED_FIELDS)
