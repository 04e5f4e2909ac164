"""The record codec: packed records in ArrayRecord files, both ways.

A record is exactly ``seq_len`` token ids, each a little-endian uint16 (``2 * seq_len`` bytes); a file
holds records one per chunk (``group_size:1``) so that any record can be read by index. Writing is
:func:`write_records` (pretokenize); reading is :func:`decode_record` (one record, the trainer's Grain
stream), :func:`iter_record_blocks` (a file in blocks, the stats job) and :func:`read_records` (a whole
file, the evaluation). Every reader refuses a record of the wrong length with :class:`DatasetError`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from beam_pipelines.common.files import atomic_path, sha256_file
from beam_pipelines.dataset.manifest import DatasetError

TOKEN_DTYPE = np.dtype("<u2")  # one token id on disk
READ_BLOCK_RECORDS = 4096  # records read at a time by the block readers: 8 MB of ids at seq_len 1024

_COMPRESSION = re.compile(r"^(uncompressed|snappy|zstd(:-?\d+)?|brotli(:\d+)?)$")


def check_compression(value: str) -> str:
    """Validate an ArrayRecord compression option (``zstd:3``, ``brotli:6``, ``snappy``, ``uncompressed``)."""
    if not _COMPRESSION.match(value):
        raise ValueError(f"--compression {value!r}: expected zstd[:LEVEL], brotli[:LEVEL], snappy or uncompressed")
    return value


def writer_options(compression: str) -> str:
    # group_size:1 puts every record in its own chunk, which is what lets Grain read any record by index.
    # max_parallelism:1: the pipeline already runs one writer per core; the writer's own compression
    # threads would only compete with the other workers (measured about 20% slower per file).
    return f"group_size:1,{compression},max_parallelism:1"


def write_records(path: str, records: np.ndarray, compression: str) -> dict:
    """Write ``records`` ((n, seq_len) uint16) to ``path`` via a temporary name, verify, then rename.

    Returns ``{"records", "bytes", "sha256"}`` of the written file.
    """
    little = np.ascontiguousarray(records.astype(TOKEN_DTYPE, copy=False))
    with atomic_path(path) as tmp:  # verified before it gets its name; removed if anything fails
        writer = ArrayRecordWriter(tmp, writer_options(compression))
        try:
            for row in little:
                writer.write(row.tobytes())
        finally:
            writer.close()
        reader = ArrayRecordReader(tmp)
        try:
            found = reader.num_records()
        finally:
            reader.close()
        if found != len(records):
            raise OSError(f"{tmp}: wrote {len(records)} records but read back {found}")
        digest = sha256_file(tmp)
    return {"records": int(found), "bytes": os.path.getsize(path), "sha256": digest}


def _unreadable(path: str, exc: Exception) -> DatasetError:
    return DatasetError(f"{path}: not a readable ArrayRecord file ({exc})")


@contextlib.contextmanager
def _reader(path: str) -> Iterator[ArrayRecordReader]:
    """An open ArrayRecordReader whose errors (plain RuntimeError/ValueError from the C++ module) become
    one :class:`DatasetError` naming the file.

    A damaged file can open and even report a record count: the reader keeps its error and raises it on
    the next read or on ``close``, so a ``close`` after a successful block is checked too.
    """
    try:
        reader = ArrayRecordReader(path)
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    done = False
    try:
        yield reader
        done = True
    except DatasetError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    finally:
        try:
            reader.close()
        except Exception as exc:
            if done:  # otherwise an error is already on its way out
                raise _unreadable(path, exc) from exc


def count_records(path: str) -> int:
    """Number of records in one ArrayRecord file (from its index, without reading the records)."""
    with _reader(path) as reader:
        return int(reader.num_records())


def decode_record(raw: bytes, seq_len: int) -> np.ndarray:
    """One record's bytes -> (seq_len,) uint16 token ids (a read-only view of ``raw``)."""
    if len(raw) != 2 * seq_len:
        raise DatasetError(f"record of {len(raw)} bytes, expected {2 * seq_len} ({seq_len} uint16 tokens)")
    return np.frombuffer(raw, dtype=TOKEN_DTYPE).astype(np.uint16, copy=False)


def decode_records(raw: Sequence[bytes], seq_len: int, *, path: str = "records", first: int = 0) -> np.ndarray:
    """Records' bytes -> (n, seq_len) uint16; a wrong length names ``path`` and the record's index."""
    for i, r in enumerate(raw):
        if len(r) != 2 * seq_len:
            raise DatasetError(
                f"{path}: record {first + i} has {len(r)} bytes, expected {2 * seq_len} (seq_len {seq_len})"
            )
    tokens = np.frombuffer(b"".join(raw), dtype=TOKEN_DTYPE).astype(np.uint16, copy=False)
    return tokens.reshape(len(raw), seq_len)  # (records, seq_len)


def iter_record_blocks(path: str, seq_len: int, block_records: int = READ_BLOCK_RECORDS) -> Iterator[np.ndarray]:
    """The records of one file in order, as (up to ``block_records``, seq_len) uint16 blocks."""
    with _reader(path) as reader:
        n = reader.num_records()
        for lo in range(0, n, block_records):
            raw = reader.read(list(range(lo, min(lo + block_records, n))))
            yield decode_records(raw, seq_len, path=path, first=lo)


def read_records(path: str, seq_len: int) -> np.ndarray:
    """All records of one file as a writable (n, seq_len) uint16 array (filled block by block)."""
    out = np.empty((count_records(path), seq_len), np.uint16)  # (records, seq_len)
    at = 0
    for block in iter_record_blocks(path, seq_len):
        out[at : at + len(block)] = block
        at += len(block)
    return out
