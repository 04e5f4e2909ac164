"""The vectorized decode of records into measurement columns, against the tokenizer's per-row decode."""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pytest

from tokenizer import decode_measurement, encode_measurement, split_measurements
from tokenizer.errors import DecodeError
from tokenizer.vocab import PAD
from trainer import data
from trainer.eval import columns


def _row(src, dst, rtt, second, version=4):
    return {
        "msm_id": 7, "event_time": dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=second),
        "src_addr": src, "dst_addr": dst, "ip_version": version, "rtt": rtt, "size": 64, "packet_error_count": 0,
    }  # fmt: skip


def _records(groups, seq_len=256):
    out = np.full((len(groups), seq_len), PAD, np.uint16)
    for r, rows in enumerate(groups):
        tokens = np.concatenate([encode_measurement(x) for x in rows])
        out[r, : len(tokens)] = tokens
    return out


GROUPS = [
    [_row("10.0.0.1", "8.8.8.8", 11.5, 0), _row("10.0.0.1", "9.9.9.9", -1.0, 1), _row("10.0.0.1", "8.8.8.8", 0.1 + 0.2, 2)],
    [_row("2001:db8::1", "2001:4860::8888", 1e-3, -5, 6), _row("2001:db8::1", "::ffff:1.2.3.4", 7.0, 3, 6)],
    [_row("1.2.3.4", "8.8.8.8", 123.0, 9)],
]


def test_decode_block_matches_the_per_row_decode():
    records = _records(GROUPS)
    addresses = columns.Addresses()
    cols = columns.decode_block(records, addresses, first_record=10)
    rows = [(r, m) for r, rec in enumerate(records) for m in split_measurements(rec)]
    assert len(cols) == len(rows) == 6
    src_text, dst_text = addresses.text(cols.src), addresses.text(cols.dst)
    offset = {}
    for i, (r, m) in enumerate(rows):
        want = decode_measurement(m)
        assert cols.record[i] == r + 10
        assert cols.start[i] == offset.get(r, 0) and cols.end[i] == cols.start[i] + len(m)
        offset[r] = cols.end[i]
        assert cols.rtt[i] == want["rtt"] and cols.timestamp[i] == int(want["event_time"].timestamp())
        assert src_text[i] == want["src_addr"]
        # An IPv4-mapped IPv6 address is keyed as the IPv4 host (one id space for both families).
        assert dst_text[i] == ("1.2.3.4" if want["dst_addr"] == "::ffff:102:304" else want["dst_addr"])
    assert cols.src[5] == cols.dst[4]  # 1.2.3.4 as a v4 source and as a mapped v6 destination
    assert cols.dst[0] == cols.dst[2] == cols.dst[5] and addresses.lookup("8.8.8.8") == cols.dst[0]
    assert addresses.lookup("192.0.2.99") == -1


def test_decode_block_on_the_sample_matches_the_per_row_decode(eval_dataset):
    dataset = data.open_dataset(str(eval_dataset))
    addresses = columns.Addresses()
    blocks = list(columns.iter_split(dataset, "val", addresses, block_records=64))
    assert len(blocks) > 1  # several blocks: ids and record numbers carry across them
    cols = columns.Columns.concat([c for _, c in blocks])
    records = np.concatenate([b for b, _ in blocks])
    decoded = [decode_measurement(m) for rec in records for m in split_measurements(rec)]
    assert len(cols) == len(decoded) == dataset.manifest["splits"]["val"]["measurements"]
    assert cols.rtt.tobytes() == np.array([d["rtt"] for d in decoded]).tobytes()  # bit for bit
    assert addresses.text(cols.src).tolist() == [d["src_addr"] for d in decoded]
    assert addresses.text(cols.dst).tolist() == [d["dst_addr"] for d in decoded]
    assert cols.timestamp.tolist() == [int(d["event_time"].timestamp()) for d in decoded]


def test_a_malformed_record_is_refused_with_its_index():
    records = _records(GROUPS)
    records[1, 0] = PAD - 1  # the second record loses its MeasurementStart: one block too many elsewhere
    with pytest.raises(DecodeError, match="records 5..7"):
        columns.decode_block(records, columns.Addresses(), first_record=5)
    records = _records(GROUPS)
    at = int(np.flatnonzero(records[2] == 1)[0])  # the third record's source block (blocks are shuffled)
    records[2, at + 1] = 20  # its family token becomes a byte
    with pytest.raises(DecodeError, match="record 2"):
        columns.decode_block(records, columns.Addresses())


def test_prefetched_yields_every_item_in_order_and_raises_where_the_producer_failed():
    assert list(columns.prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield from range(3)
        raise DecodeError("record 3: broken")

    got = []
    with pytest.raises(DecodeError, match="record 3"):
        for item in columns.prefetched(failing()):
            got.append(item)  # noqa: PERF402 (the items before the error must be kept)
    assert got == [0, 1, 2]
    before = threading.active_count()
    stream = columns.prefetched(iter(range(1000)), depth=1)
    assert next(stream) == 0
    stream.close()  # a consumer that stops early leaves no producer blocked: its thread ends
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
