"""IP address parsing shared by the per-row and vectorized encoders."""

from __future__ import annotations

import ipaddress

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
    """Parse a list of unique address strings.

    Returns ``status`` (int8: 4 or 6 for valid, 0 null, -1 empty, -2 malformed),
    ``packed`` (uint8, (n, 16): IPv4 in the first 4 columns) and ``words`` (uint64, (n, 2): high, low).
    A Python loop is fine here: it runs once per *distinct* address, not per row.
    """
    n = len(values)
    status = np.zeros(n, dtype=np.int8)
    packed = np.zeros((n, 16), dtype=np.uint8)
    words = np.zeros((n, 2), dtype=np.uint64)
    if len(_CACHE) > _CACHE_LIMIT:
        _CACHE.clear()
    for i, v in enumerate(values):
        entry = _CACHE.get(v)
        if entry is None:
            entry = _CACHE[v] = _parse_entry(v)
        status[i], packed[i], words[i] = entry
    return status, packed, words


# Batches of one job see the same probes and targets again and again: remember parsed addresses per
# process (bounded) so each distinct address is parsed about once per worker, not once per batch.
_CACHE: dict = {}
_CACHE_LIMIT = 1 << 20
_STATUS = {"null": 0, "empty": -1, "malformed": -2}


def _parse_entry(value) -> tuple[int, np.ndarray, tuple[int, int]]:
    parsed = parse_address(value)
    raw16 = np.zeros(16, dtype=np.uint8)
    if isinstance(parsed, str):
        return _STATUS[parsed], raw16, (0, 0)
    version, raw = parsed
    raw16[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return version, raw16, address_words(raw)
