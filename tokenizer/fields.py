"""Field block codecs of scheme v1: one field's value <-> the tokens of its block (role token included).

The byte format of every field lives here and nowhere else; the per-row encoder and decoder
(:mod:`tokenizer.measurement`), the vectorized table encoder (:mod:`tokenizer.table`), the prompts of
``trainer.eval.predict`` and the RTT decode of ``trainer.eval.model_eval`` all go through these codecs.

    src, dst   [SrcIpStart | DestIpStart, Ipv4Start | Ipv6Start, 4 | 16 address bytes]
    rtt        [RttStart, float64 big-endian]        size       [SizeStart, uint16 big-endian]
    errors     [ErrorCountStart, uint8]              timestamp  [TimestampStart, int64 big-endian]
    msm_id     [MsmIdStart, int64 big-endian]

A numeric codec's format is a ``struct`` format string (scalars, one row at a time) that numpy also reads
as a dtype (whole columns at once), so the two paths cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence

import numpy as np

from tokenizer.errors import DecodeError
from tokenizer.vocab import (
    BLOCK_DST,
    BLOCK_ERRORS,
    BLOCK_MSM_ID,
    BLOCK_NAMES,
    BLOCK_ROLE,
    BLOCK_RTT,
    BLOCK_SIZE,
    BLOCK_SRC,
    BLOCK_TIMESTAMP,
    BYTE_OFFSET,
    IPV4_START,
    IPV6_START,
)

_FAMILY_TOKEN = {4: IPV4_START, 6: IPV6_START}
_FAMILY_OF_TOKEN = {IPV4_START: 4, IPV6_START: 6}
_ADDRESS_BYTES = {4: 4, 6: 16}


def byte_tokens(raw: bytes) -> list[int]:
    """The byte tokens of ``raw`` (byte ``b`` is token ``BYTE_OFFSET + b``)."""
    return [BYTE_OFFSET + b for b in raw]


def payload(tokens: Sequence[int], start: int, n: int) -> bytes:
    """The ``n`` bytes that ``tokens[start:start + n]`` stand for.

    Raises :class:`~tokenizer.errors.DecodeError` when there are fewer than ``n`` tokens or one is not a
    byte token.
    """
    chunk = tokens[start : start + n]
    if len(chunk) != n or any(not BYTE_OFFSET <= t < BYTE_OFFSET + 256 for t in chunk):
        raise DecodeError(f"expected {n} byte tokens at position {start}, got {list(chunk)}")
    return bytes(t - BYTE_OFFSET for t in chunk)


@dataclasses.dataclass(frozen=True)
class NumberCodec:
    """A fixed-width number block: the role token, then the value's bytes in ``fmt``."""

    block: int  # canonical block index (tokenizer.vocab.BLOCK_*)
    fmt: str  # big-endian struct format of the value; numpy reads the same string as a dtype
    # Derived from the two above once, not on every call: the per-row encoder and decoder are loops.
    name: str = dataclasses.field(init=False)  # the field's name (tokenizer.vocab.BLOCK_NAMES)
    role: int = dataclasses.field(init=False)  # the block's role token
    width: int = dataclasses.field(init=False)  # bytes of the value
    length: int = dataclasses.field(init=False)  # tokens of the block, role included
    dtype: np.dtype = dataclasses.field(init=False)  # the (big-endian) numpy dtype of the value's bytes
    bounds: tuple[int, int] | None = dataclasses.field(init=False)  # smallest, largest integer; None: a float

    def __post_init__(self):
        derived = {
            "name": BLOCK_NAMES[self.block],
            "role": int(BLOCK_ROLE[self.block]),
            "width": struct.calcsize(self.fmt),
            "length": 1 + struct.calcsize(self.fmt),
            "dtype": np.dtype(self.fmt),
        }
        info = np.iinfo(derived["dtype"]) if derived["dtype"].kind in "iu" else None
        derived["bounds"] = (int(info.min), int(info.max)) if info is not None else None
        for key, value in derived.items():
            object.__setattr__(self, key, value)

    def pack(self, value: float) -> bytes:
        """The value's bytes (``struct.error`` when it does not fit the format)."""
        return struct.pack(self.fmt, value)

    def block_of(self, raw: bytes) -> list[int]:
        """The block of already packed bytes (from :meth:`pack`)."""
        return [self.role, *byte_tokens(raw)]

    def encode(self, value: float) -> list[int]:
        """The block of one value."""
        return self.block_of(self.pack(value))

    def decode(self, tokens: Sequence[int], start: int = 0) -> int | float:
        """The value of the block whose role token is ``tokens[start]`` (a float RTT is bit-exact).

        Raises :class:`~tokenizer.errors.DecodeError` on another role or a payload that is not
        :attr:`width` byte tokens.
        """
        if start >= len(tokens) or tokens[start] != self.role:
            raise DecodeError(f"expected the {self.name} role token {self.role} at position {start}")
        return struct.unpack(self.fmt, payload(tokens, start + 1, self.width))[0]

    def to_bytes(self, values: np.ndarray) -> np.ndarray:
        """(n, width) uint8: the bytes of each of ``values`` (n,), as :meth:`pack` gives them."""
        arr = np.ascontiguousarray(np.asarray(values).astype(self.dtype))
        return arr.view(np.uint8).reshape(len(arr), self.width)

    def from_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """(..., width) byte tokens (payloads without the role) -> (...) values in native byte order.

        The vectorized :meth:`decode`: the same values, bit for bit. Raises
        :class:`~tokenizer.errors.DecodeError` on a token that is not a byte token.
        """
        tokens = np.asarray(tokens)
        if tokens.shape[-1:] != (self.width,):
            raise DecodeError(f"{self.name}: expected (..., {self.width}) byte tokens, got shape {tokens.shape}")
        if np.any((tokens < BYTE_OFFSET) | (tokens >= BYTE_OFFSET + 256)):
            raise DecodeError(f"{self.name}: a payload token is not a byte token")
        raw = (tokens - BYTE_OFFSET).astype(np.uint8).reshape(-1, self.width)  # (values, width)
        values = raw.copy().view(self.dtype)[:, 0]  # (values,)
        return values.astype(self.dtype.newbyteorder("=")).reshape(tokens.shape[:-1])


@dataclasses.dataclass(frozen=True)
class AddressCodec:
    """An address block: the role token, the family token (Ipv4Start or Ipv6Start), the packed address."""

    block: int  # BLOCK_SRC or BLOCK_DST
    name: str = dataclasses.field(init=False)  # the field's name (tokenizer.vocab.BLOCK_NAMES)
    role: int = dataclasses.field(init=False)  # the block's role token

    def __post_init__(self):
        object.__setattr__(self, "name", BLOCK_NAMES[self.block])
        object.__setattr__(self, "role", int(BLOCK_ROLE[self.block]))

    @staticmethod
    def length(ip_version: int) -> int:
        """Tokens of the block, role and family included."""
        return 2 + _ADDRESS_BYTES[ip_version]

    def encode(self, packed: bytes) -> list[int]:
        """The block of a packed address (4 bytes: IPv4, 16: IPv6)."""
        version = {4: 4, 16: 6}.get(len(packed))
        if version is None:
            raise ValueError(f"{self.name}: a packed address has 4 or 16 bytes, got {len(packed)}")
        return [self.role, _FAMILY_TOKEN[version], *byte_tokens(packed)]

    def decode(self, tokens: Sequence[int], start: int = 0) -> tuple[int, bytes]:
        """``(ip_version, packed bytes)`` of the block whose role token is ``tokens[start]``.

        Raises :class:`~tokenizer.errors.DecodeError` on another role, a missing family token or a short
        address.
        """
        if start >= len(tokens) or tokens[start] != self.role:
            raise DecodeError(f"expected the {self.name} role token {self.role} at position {start}")
        family = tokens[start + 1] if start + 1 < len(tokens) else None
        if family not in _FAMILY_OF_TOKEN:
            raise DecodeError(f"expected Ipv4Start/Ipv6Start at position {start + 1}")
        version = _FAMILY_OF_TOKEN[family]
        return version, payload(tokens, start + 2, _ADDRESS_BYTES[version])


SRC = AddressCodec(BLOCK_SRC)
DST = AddressCodec(BLOCK_DST)
RTT = NumberCodec(BLOCK_RTT, ">d")  # milliseconds; -1.0 is a failed ping
SIZE = NumberCodec(BLOCK_SIZE, ">H")
ERRORS = NumberCodec(BLOCK_ERRORS, ">B")
TIMESTAMP = NumberCodec(BLOCK_TIMESTAMP, ">q")  # epoch seconds, UTC
MSM_ID = NumberCodec(BLOCK_MSM_ID, ">q")

CODECS = (SRC, DST, RTT, SIZE, ERRORS, TIMESTAMP, MSM_ID)  # indexed by canonical block
BY_ROLE = {codec.role: codec for codec in CODECS}
