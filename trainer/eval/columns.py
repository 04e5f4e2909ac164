"""Decode whole blocks of records into measurement columns, vectorized (no per-measurement Python).

A record is whole measurements followed by ``PAD`` (the data contract); the dataset's tokenizer scheme
parses a block of records into per-measurement arrays (``Scheme.parse_records``, vectorized), and this
module keeps the columns evaluation uses.

Addresses become small integer ids through :class:`Addresses`, shared by every split of one evaluation so
that a train id and a test id name the same address. An address key is its 128-bit value; IPv4 addresses
are keyed as IPv4-mapped IPv6 (``::ffff:a.b.c.d``), the standard embedding, so the two families share one
id space (an IPv6 row that writes an IPv4 host in mapped form is the same host).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import queue
import threading
from collections.abc import Iterator

import numpy as np

import tokenizer
from beam_pipelines.dataset import DatasetError
from beam_pipelines.dataset.records import iter_record_blocks
from beam_pipelines.dataset.records import read_records as read_record_file


@dataclasses.dataclass(frozen=True)
class Columns:
    """One row per measurement, in file order; (n,) each."""

    record: np.ndarray  # int64 index of the record in the split
    start: np.ndarray  # int32 first token of the measurement in its record
    end: np.ndarray  # int32 one past its last token
    src: np.ndarray  # int64 address id (:class:`Addresses`)
    dst: np.ndarray  # int64 address id
    rtt: np.ndarray  # float64 ms, bit-exact; < 0 for a failure
    timestamp: np.ndarray  # int64 epoch seconds

    def __len__(self) -> int:
        return len(self.rtt)

    def take(self, index: np.ndarray) -> Columns:
        """The rows at ``index`` (an integer or boolean array)."""
        return Columns(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        if not parts:
            return Columns(*(np.zeros(0, t) for t in (np.int64, np.int32, np.int32, np.int64, np.int64,
                                                       np.float64, np.int64)))
        return Columns(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Columns)))


class Addresses:
    """Address key (16 bytes) -> id, in order of first appearance; grows as blocks are decoded.

    Only each block's *distinct* keys pass through the Python dict (a few thousand per block), never one
    per measurement.
    """

    def __init__(self):
        self._ids: dict[bytes, int] = {}
        self._keys: list[bytes] = []

    def __len__(self) -> int:
        return len(self._keys)

    def ids(self, keys: np.ndarray) -> np.ndarray:
        """(n, 2) uint64 keys (high, low 64 bits) -> (n,) int64 ids, adding keys not seen before."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        if not len(keys):
            return np.zeros(0, np.int64)
        # Distinct keys by a lexsort of the two words (np.unique on 16-byte voids compares bytes one by one,
        # several times slower).
        order = np.lexsort((keys[:, 1], keys[:, 0]))
        ordered = keys[order]
        new = np.ones(len(keys), bool)
        new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
        inverse = np.empty(len(keys), np.int64)
        inverse[order] = np.cumsum(new) - 1
        unique = np.ascontiguousarray(ordered[new]).view(np.dtype((np.void, 16)))[:, 0]
        mapped = np.empty(len(unique), np.int64)
        for i, key in enumerate(unique.tolist()):  # distinct keys of the block only
            at = self._ids.get(key)
            if at is None:
                at = self._ids[key] = len(self._keys)
                self._keys.append(key)
            mapped[i] = at
        return mapped[inverse.reshape(-1)]

    def words(self, start: int = 0) -> np.ndarray:
        """(n, 2) uint64 keys (high, low 64 bits) of the ids from ``start`` on, in id order."""
        keys = self._keys[start:]
        return np.frombuffer(b"".join(keys), np.uint64).reshape(-1, 2) if keys else np.zeros((0, 2), np.uint64)

    def lookup(self, text: str) -> int:
        """The id of an address given as text, or -1 if it was never seen."""
        ip = ipaddress.ip_address(text)
        value = int(ip) | (0xFFFF << 32) if ip.version == 4 else int(ip)
        key = np.array([[value >> 64, value & (2**64 - 1)]], np.uint64).view(np.dtype((np.void, 16)))[0, 0]
        return self._ids.get(key.tobytes(), -1)

    def text(self, ids: np.ndarray) -> np.ndarray:
        """(n,) ids -> (n,) object array of canonical address text (as the tokenizer decodes them)."""
        ids = np.asarray(ids, np.int64)
        unique, inverse = np.unique(ids, return_inverse=True)
        words = np.frombuffer(b"".join(self._keys[i] for i in unique.tolist()), np.uint64).reshape(-1, 2)
        names = []
        for hi, lo in words.tolist():  # distinct addresses only
            if hi == 0 and lo >> 32 == 0xFFFF:
                names.append(str(ipaddress.IPv4Address(lo & 0xFFFFFFFF)))
            else:
                names.append(str(ipaddress.IPv6Address((hi << 64) | lo)))
        return np.array(names, dtype=object)[inverse.reshape(-1)] if len(ids) else np.zeros(0, object)


def decode_block(records: np.ndarray, addresses: Addresses, *, first_record: int = 0,
                 scheme: tokenizer.Scheme | None = None) -> Columns:
    """The measurement columns of a block of records ((records, seq_len) uint16), in file order.

    ``scheme`` is the dataset's tokenizer scheme (``tokenizer.get_scheme(manifest["tokenizer"])``; None:
    ``v1``), whose one record parser does the work. ``first_record`` is the block's first record index in
    its split (the ``record`` column counts from it). Raises :class:`~tokenizer.errors.DecodeError` naming
    the record on a malformed token stream.
    """
    parsed = (scheme or tokenizer.get_scheme("v1")).parse_records(records, first_record=first_record)
    return _columns(parsed, addresses)


def _columns(parsed: tokenizer.Parsed, addresses: Addresses) -> Columns:
    """The columns of a parsed block, its addresses mapped to ids (in block order: ids are given in order
    of first appearance, so blocks pass through here one at a time, in file order)."""
    return Columns(
        record=parsed.record,
        start=parsed.start,
        end=parsed.end,
        src=addresses.ids(parsed.src),
        dst=addresses.ids(parsed.dst),
        rtt=parsed.rtt,
        timestamp=parsed.timestamp,
    )


def dataset_scheme(dataset) -> tokenizer.Scheme:
    """The tokenizer scheme of an open dataset (its manifest's ``tokenizer`` entry)."""
    return tokenizer.get_scheme(dataset.manifest["tokenizer"])


def prefetched(iterator: Iterator, depth: int = 2) -> Iterator:
    """The items of ``iterator``, produced by a background thread up to ``depth`` items ahead (reading the
    next records while this thread decodes: ArrayRecord's reader and zstd release the GIL). An exception
    in the producer is raised here, at the item where it happened."""
    items: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as err:  # noqa: BLE001 (handed to the consumer, raised there)
            items.put((done, err))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, err = items.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()


def _blocks(dataset, split: str, block_records: int) -> Iterator[np.ndarray]:
    for path in dataset.files(split):
        yield from iter_record_blocks(path, dataset.seq_len, block_records)


def _parsed_blocks(dataset, split: str, block_records: int) -> Iterator[tuple[np.ndarray, tokenizer.Parsed]]:
    """Each block of ``split`` and the scheme's parse of it (pure: no state carried between blocks)."""
    first = 0
    scheme = dataset_scheme(dataset)
    for block in _blocks(dataset, split, block_records):
        yield block, scheme.parse_records(block, first_record=first)
        first += len(block)


def iter_split(dataset, split: str, addresses: Addresses, *, block_records: int = 4096) -> Iterator[tuple[np.ndarray, Columns]]:
    """``(records, columns)`` per block of ``split``'s records, in file order; memory is a few blocks at a time.
    The next blocks are read and parsed by :func:`prefetched`'s thread while this one's addresses get their
    ids and the caller works on it: the parse is mostly numpy, which releases the GIL, so the two overlap on
    two cores. A malformed record raises :class:`~beam_pipelines.dataset.DatasetError` (an ``InputError``)
    naming the dataset, the split and the records."""
    try:
        for block, parsed in prefetched(_parsed_blocks(dataset, split, block_records)):
            yield block, _columns(parsed, addresses)
    except tokenizer.DecodeError as err:  # a record that is not a token stream of its scheme: bad input
        raise DatasetError(f"{dataset.root}: split {split!r}: {err}") from err


def decode_split(dataset, split: str, addresses: Addresses, *, block_records: int = 4096) -> Columns:
    """Every measurement of ``split`` as columns (decoded block by block; the columns are kept)."""
    return Columns.concat([c for _, c in iter_split(dataset, split, addresses, block_records=block_records)])


def read_records(dataset, split: str) -> np.ndarray:
    """All records of ``split`` in file order: (records, seq_len) uint16, read through the data contract."""
    parts = [read_record_file(path, dataset.seq_len) for path in dataset.files(split)]
    return np.concatenate(parts) if parts else np.zeros((0, dataset.seq_len), np.uint16)


@dataclasses.dataclass(frozen=True)
class Spans:
    """Where each measurement of a split lies: record index and [start, end) token span, (n,) each."""

    record: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.record)


def measurement_spans(records: np.ndarray) -> Spans:
    """The span of every measurement of every record, in file order (vectorized, by :func:`decode_block`)."""
    cols = decode_block(records, Addresses())
    return Spans(cols.record, cols.start.astype(np.int64), cols.end.astype(np.int64))
