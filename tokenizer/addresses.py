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
    codes = {"null": 0, "empty": -1, "malformed": -2}
    for i, v in enumerate(values):
        parsed = parse_address(v)
        if isinstance(parsed, str):
            status[i] = codes[parsed]
            continue
        version, raw = parsed
        status[i] = version
        packed[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        hi, lo = address_words(raw)
        words[i] = (hi, lo)
    return status, packed, words
