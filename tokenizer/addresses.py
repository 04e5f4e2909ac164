"""IP address parsing shared by the per-row and vectorized encoders."""

from __future__ import annotations

import ipaddress
import threading

import numpy as np


def parse_address(text: object) -> tuple[int, bytes] | str:
    """Parse one address.

    Returns ``(ip_version, packed_bytes)`` or, when the address cannot be encoded faithfully,
    one of ``"null"``, ``"empty"``, ``"malformed"``.
    Scoped IPv6 addresses (``fe80::1%eth0``) are malformed: the scope would be lost by packing.
    """
    if text is None:
        return "null"
    if not isinstance(text, str):
        return "malformed"
    if text == "":
        return "empty"
    if "%" in text:
        return "malformed"
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return "malformed"
    return addr.version, addr.packed


def format_address(ip_version: int, packed: bytes) -> str:
    """Canonical text of a packed address (compressed form for IPv6)."""
    return str(ipaddress.IPv4Address(packed) if ip_version == 4 else ipaddress.IPv6Address(packed))


def address_words(packed: bytes) -> tuple[int, int]:
    """(high, low) 64-bit words of the address as an unsigned integer (IPv4: high is 0)."""
    value = int.from_bytes(packed, "big")
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def parse_unique(values: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a list of address strings, each distinct one once (a value may repeat: two columns'
    dictionaries can share addresses).

    Returns ``status`` (int8: 4 or 6 for valid, 0 null, -1 empty, -2 malformed),
    ``packed`` (uint8, (n, 16): IPv4 in the first 4 columns) and ``words`` (uint64, (n, 2): high, low).
    Python work here is per *distinct* address, never per row.
    """
    cache = _cache()
    if len(cache.index) + len(values) > _CACHE_LIMIT:
        cache.clear()
    index = cache.index
    slots = np.fromiter((index.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    for i in np.flatnonzero(slots < 0).tolist():
        slots[i] = cache.add(values[i])
    return cache.status[slots], cache.packed[slots], cache.words[slots]


def _parse_entry(value) -> tuple[int, np.ndarray, tuple[int, int]]:
    parsed = parse_address(value)
    raw16 = np.zeros(16, dtype=np.uint8)
    if isinstance(parsed, str):
        return _STATUS[parsed], raw16, (0, 0)
    version, raw = parsed
    raw16[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return version, raw16, address_words(raw)


class _ParsedAddresses:
    """Addresses parsed so far in this process, as rows of numpy arrays.

    Batches of one job see the same probes and targets again and again, so each distinct address is
    parsed about once per worker rather than once per batch; a lookup is then one dict probe per
    distinct value plus a vectorized gather. Bounded by ``_CACHE_LIMIT`` entries.
    """

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.index: dict = {}
        self.status = np.zeros(1024, dtype=np.int8)
        self.packed = np.zeros((1024, 16), dtype=np.uint8)
        self.words = np.zeros((1024, 2), dtype=np.uint64)

    def add(self, value) -> int:
        """The slot of ``value``, parsed and stored if it is new (a value repeated within one lookup is
        stored once: its slot must never be taken again by the next new value)."""
        slot = self.index.get(value)
        if slot is not None:
            return slot
        slot = len(self.index)
        if slot == len(self.status):  # grow geometrically
            self.status = np.concatenate([self.status, np.zeros_like(self.status)])
            self.packed = np.concatenate([self.packed, np.zeros_like(self.packed)])
            self.words = np.concatenate([self.words, np.zeros_like(self.words)])
        self.status[slot], self.packed[slot], self.words[slot] = _parse_entry(value)
        self.index[value] = slot
        return slot


# One cache per thread: runners may call the encoder from several threads of one process.
_LOCAL = threading.local()
_CACHE_LIMIT = 1 << 20


def _cache() -> _ParsedAddresses:
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = _ParsedAddresses()
    return cache


_STATUS = {"null": 0, "empty": -1, "malformed": -2}
