"""Decode whole blocks of records into measurement columns, vectorized (no per-measurement Python).

A record is whole measurements followed by ``PAD`` (the data contract), and role ids never occur as byte
tokens, so every block of a measurement can be found by looking for its role token in the flat token array:
one ``MeasurementStart`` (0) per measurement, one ``SrcIpStart`` (1), ``DestIpStart`` (2), ``RttStart`` (5)
and ``TimestampStart`` (8) each, in the same order as the measurements. Payloads are gathered with fancy
indexing and decoded by the tokenizer's own codecs (``tokenizer.fields``) on whole arrays.

Addresses become small integer ids through :class:`Addresses`, shared by every split of one evaluation so
that a train id and a test id name the same address. An address key is its 128-bit value; IPv4 addresses
are keyed as IPv4-mapped IPv6 (``::ffff:a.b.c.d``), the standard embedding, so the two families share one
id space (an IPv6 row that writes an IPv4 host in mapped form is the same host).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator

import numpy as np

from tokenizer import fields
from tokenizer.errors import DecodeError
from tokenizer.vocab import (
    BYTE_OFFSET,
    DEST_IP_START,
    IPV4_START,
    IPV6_START,
    MEASUREMENT_START,
    PAD,
    RTT_START,
    SRC_IP_START,
    TIMESTAMP_START,
)

_V4_MAPPED = np.uint64(0xFFFF << 32)


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


def _role_positions(flat: np.ndarray, role: int, n: int, seq_len: int, first_record: int) -> np.ndarray:
    pos = np.flatnonzero(flat == role)
    if len(pos) != n:
        raise DecodeError(
            f"records {first_record}..{first_record + len(flat) // seq_len - 1}: {n} measurements but "
            f"{len(pos)} blocks with role token {role}"
        )
    return pos


_TAIL = 17  # tokens a window may reach past a role token (family + 16 address bytes)


def _windows(padded: np.ndarray, pos: np.ndarray, offset: int, width: int) -> np.ndarray:
    """(n, width) tokens from ``pos + offset`` on, as a gather of rows of a sliding-window view (no (n, width)
    index array); ``padded`` is the flat block followed by ``_TAIL`` copies of its last token, so a window
    that runs past the end reads that token, as clipping the positions would."""
    return np.lib.stride_tricks.sliding_window_view(padded, width)[pos + offset]


def _address_keys(flat: np.ndarray, pos: np.ndarray, first_record: int, seq_len: int) -> np.ndarray:
    """(n, 2) uint64 keys of the address blocks whose role tokens sit at ``pos`` (``flat``: padded, see
    :func:`_windows`)."""
    family = flat[pos + 1]
    v4, v6 = family == IPV4_START, family == IPV6_START
    if not np.all(v4 | v6):
        bad = int(pos[~(v4 | v6)][0])
        raise DecodeError(f"record {first_record + bad // seq_len}: no family token after the address role at "
                          f"position {bad % seq_len}")
    raw = _windows(flat, pos, 2, 16).astype(np.int16) - BYTE_OFFSET  # (n, 16); v4 rows use only their first 4
    width = np.where(v4, 4, 16)[:, None]
    used = np.arange(16)[None, :] < width
    if np.any(used & ((raw < 0) | (raw > 255))):
        raise DecodeError(f"records from {first_record}: an address payload token is not a byte token")
    raw = np.where(used, raw, 0).astype(np.uint8)
    keys = np.ascontiguousarray(raw).view(">u8").astype(np.uint64)  # (n, 2) high, low
    v4_value = np.ascontiguousarray(raw[:, :4]).view(">u4")[:, 0].astype(np.uint64)
    keys[v4, 0] = 0
    keys[v4, 1] = _V4_MAPPED | v4_value[v4]
    return keys


def _payload(flat: np.ndarray, pos: np.ndarray, codec) -> np.ndarray:
    return codec.from_tokens(_windows(flat, pos, 1, codec.width).astype(np.int64))  # (n, width) tokens


def decode_block(records: np.ndarray, addresses: Addresses, *, first_record: int = 0) -> Columns:
    """The measurement columns of a block of records ((records, seq_len) uint16), in file order.

    ``first_record`` is the block's first record index in its split (the ``record`` column counts from
    it). Raises :class:`~tokenizer.errors.DecodeError` naming the record on a malformed token stream.
    """
    records = np.asarray(records)
    n_rec, seq_len = records.shape
    flat = records.reshape(-1)  # (records * seq_len,)
    starts = np.flatnonzero(flat == MEASUREMENT_START)
    n = len(starts)
    content_end = seq_len - (records == PAD).sum(axis=1)  # (records,) PAD is only ever a suffix
    rec = starts // seq_len
    start = starts % seq_len
    nxt = np.append(starts[1:], n_rec * seq_len)
    end = np.where(nxt // seq_len == rec, nxt % seq_len, content_end[rec])
    src_pos = _role_positions(flat, SRC_IP_START, n, seq_len, first_record)
    dst_pos = _role_positions(flat, DEST_IP_START, n, seq_len, first_record)
    rtt_pos = _role_positions(flat, RTT_START, n, seq_len, first_record)
    ts_pos = _role_positions(flat, TIMESTAMP_START, n, seq_len, first_record)
    for pos in (src_pos, dst_pos, rtt_pos, ts_pos):  # the k-th block of each kind is in the k-th measurement
        if n and not (np.all(pos > starts) & np.all(pos < np.append(starts[1:], len(flat)))):
            raise DecodeError(f"records {first_record}..{first_record + n_rec - 1}: a measurement lacks a block")
    tail = flat[-1:] if len(flat) else np.array([PAD], flat.dtype)
    padded = np.concatenate([flat, np.repeat(tail, _TAIL)])  # see _windows
    return Columns(
        record=rec.astype(np.int64) + first_record,
        start=start.astype(np.int32),
        end=end.astype(np.int32),
        src=addresses.ids(_address_keys(padded, src_pos, first_record, seq_len)),
        dst=addresses.ids(_address_keys(padded, dst_pos, first_record, seq_len)),
        rtt=_payload(padded, rtt_pos, fields.RTT).astype(np.float64),
        timestamp=_payload(padded, ts_pos, fields.TIMESTAMP).astype(np.int64),
    )


def prefetched(iterator: Iterator, depth: int = 2) -> Iterator:
    """The items of ``iterator``, produced by a background thread up to ``depth`` items ahead (reading the
    next records while this thread decodes: ArrayRecord's reader and zstd release the GIL). An exception
    in the producer is raised here, at the item where it happened."""
    import queue
    import threading

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
    from beam_pipelines.dataset.records import iter_record_blocks

    for path in dataset.files(split):
        yield from iter_record_blocks(path, dataset.seq_len, block_records)


def iter_split(dataset, split: str, addresses: Addresses, *, block_records: int = 4096) -> Iterator[tuple[np.ndarray, Columns]]:
    """``(records, columns)`` per block of ``split``'s records, in file order; memory is a few blocks at a time
    (the next ones are read by :func:`prefetched` while this one is decoded)."""
    first = 0
    for block in prefetched(_blocks(dataset, split, block_records)):
        yield block, decode_block(block, addresses, first_record=first)
        first += len(block)


def decode_split(dataset, split: str, addresses: Addresses, *, block_records: int = 4096) -> Columns:
    """Every measurement of ``split`` as columns (decoded block by block; the columns are kept)."""
    return Columns.concat([c for _, c in iter_split(dataset, split, addresses, block_records=block_records)])
