"""The record codec: (n, seq_len) uint16 arrays to ArrayRecord files of little-endian records and back."""

from __future__ import annotations

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from beam_pipelines.common.files import sha256_file
from beam_pipelines.dataset import DatasetError
from beam_pipelines.dataset.records import (
    check_compression,
    count_records,
    decode_record,
    decode_records,
    iter_record_blocks,
    read_records,
    write_records,
)
from tests.beam_pipelines.dataset.helpers import SEQ_LEN, tiny_records


def test_write_then_read_round_trip(tmp_path):
    records = tiny_records(5, seed=1)
    path = str(tmp_path / "r.array_record")
    info = write_records(path, records, "zstd:3")
    assert info == {"records": 5, "bytes": (tmp_path / "r.array_record").stat().st_size, "sha256": sha256_file(path)}
    assert not (tmp_path / "r.array_record.tmp").exists()
    got = read_records(path, SEQ_LEN)
    assert got.dtype == np.uint16 and got.shape == (5, SEQ_LEN) and got.flags.writeable
    assert np.array_equal(got, records)
    assert count_records(path) == 5


def test_a_record_is_seq_len_little_endian_uint16(tmp_path):
    records = np.array([[0x0102, 266, 0, 1, 2, 3, 4, 0xFFFF]], np.uint16)
    path = str(tmp_path / "r.array_record")
    write_records(path, records, "uncompressed")
    reader = ArrayRecordReader(path)
    raw = reader.read_all()
    reader.close()
    assert raw == [b"\x02\x01\x0a\x01" + b"\x00\x00\x01\x00\x02\x00\x03\x00\x04\x00\xff\xff"]
    assert decode_record(raw[0], SEQ_LEN).tolist() == records[0].tolist()


def test_an_empty_file(tmp_path):
    path = str(tmp_path / "empty.array_record")
    write_records(path, np.zeros((0, SEQ_LEN), np.uint16), "zstd:3")
    assert read_records(path, SEQ_LEN).shape == (0, SEQ_LEN)
    assert list(iter_record_blocks(path, SEQ_LEN)) == []


def test_blocks_cover_the_file_in_order(tmp_path):
    records = tiny_records(5, seed=2)
    path = str(tmp_path / "r.array_record")
    write_records(path, records, "snappy")
    blocks = list(iter_record_blocks(path, SEQ_LEN, block_records=2))
    assert [len(b) for b in blocks] == [2, 2, 1]
    assert np.array_equal(np.concatenate(blocks), records)


def test_decode_refuses_a_wrong_length():
    with pytest.raises(DatasetError, match=r"record of 6 bytes, expected 16 \(8 uint16 tokens\)"):
        decode_record(b"\x00" * 6, SEQ_LEN)
    good = b"\x00" * 16
    with pytest.raises(DatasetError, match=r"^f.array_record: record 12 has 18 bytes, expected 16 \(seq_len 8\)$"):
        decode_records([good, good, b"\x00" * 18], SEQ_LEN, path="f.array_record", first=10)
    assert decode_records([good, good], SEQ_LEN).shape == (2, SEQ_LEN)


def test_reading_a_file_of_wrong_length_records_names_it(tmp_path):
    path = str(tmp_path / "short.array_record")
    writer = ArrayRecordWriter(path, "group_size:1")
    for _ in range(3):
        writer.write(b"\x00\x00" * 10)
    writer.close()
    with pytest.raises(DatasetError, match=f"{path}: record 0 has 20 bytes, expected 16"):
        read_records(path, SEQ_LEN)


def test_a_file_that_is_not_array_record(tmp_path):
    path = tmp_path / "junk.array_record"
    path.write_bytes(b"this is not an ArrayRecord file" * 10)
    # The C++ reader opens it and reports 0 records; the error surfaces on read or close.
    with pytest.raises(DatasetError, match=f"{path}: not a readable ArrayRecord file"):
        count_records(str(path))
    with pytest.raises(DatasetError, match=f"{path}: not a readable ArrayRecord file"):
        read_records(str(path), SEQ_LEN)


def test_check_compression():
    for ok in ("zstd", "zstd:3", "zstd:-1", "brotli:6", "snappy", "uncompressed"):
        assert check_compression(ok) == ok
    with pytest.raises(ValueError, match="expected zstd"):
        check_compression("gzip")
