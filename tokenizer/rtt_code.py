"""The RTT value tokens of scheme v1 seen as an ordered code, for exact quantiles by descent.

``trainer.eval.quantiles`` finds any quantile of a model's RTT distribution by walking the RTT's value
tokens one position at a time, which needs four facts about a scheme's RTT code: how many value tokens
follow the RTT's role token, which tokens may stand at each position *in the order of the values they
lead to*, which of them keep the value a finite successful RTT given the tokens before, and which first
tokens mean a failed ping. This module gives those facts for v1 (:data:`V1_RTT_CODE`); a scheme object
(``tokenizer.get_scheme``) can own the same interface for its own code.

v1 writes the RTT as a big-endian IEEE-754 float64. For non-negative doubles the order of the values
equals the unsigned order of their bit patterns, and so the lexicographic order of their big-endian bytes:
byte order is value order, token by token. A failed ping is -1.0, and every double whose sign bit is set
(first byte >= 0x80) is negative: those first bytes are the failure tokens. Infinity and NaN have all
eleven exponent bits set (first byte 0x7F, second byte >= 0xF0): the success code leaves them out, so
every value it can produce is a finite RTT, from 0.0 to the largest double.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokenizer import fields
from tokenizer.vocab import BYTE_OFFSET, RTT_START, TOKENIZER_NAME

_ALL_BYTES = np.arange(256, dtype=np.int64) + BYTE_OFFSET  # (256,) byte tokens in byte order


@dataclasses.dataclass(frozen=True)
class V1RttCode:
    """v1's RTT value tokens (8 bytes of a big-endian float64) as an ordered code; see the module docstring.

    The interface ``trainer.eval.quantiles.RttCode`` reads: :attr:`role`, :attr:`width`,
    :meth:`grammar_tokens`, :meth:`value_tokens`, :meth:`success_mask`, :attr:`failure_tokens`,
    :meth:`decode`, :meth:`encode`.
    """

    role: int = RTT_START  # the token a prompt ends with, right before the value tokens
    width: int = fields.RTT.width  # value tokens after the role token
    failure_tokens: np.ndarray = dataclasses.field(
        default_factory=lambda: _ALL_BYTES[0x80:].copy())  # first tokens of a negative value (a failure)

    def grammar_tokens(self, position: int) -> np.ndarray:
        """(G,) every token the grammar allows at ``position`` (0-based among the value tokens): any byte."""
        self._check(position)
        return _ALL_BYTES

    def value_tokens(self, position: int) -> np.ndarray:
        """(K,) the tokens that may stand at ``position`` in a successful RTT, in ascending order of the
        values they lead to: the bytes 0..255 (byte order is value order for non-negative doubles)."""
        self._check(position)
        return _ALL_BYTES

    def success_mask(self, prefix: np.ndarray) -> np.ndarray:
        """(B, K) bool over :meth:`value_tokens` of position ``t``: which tokens keep the value a finite,
        non-negative double after the value tokens ``prefix`` (B, t) so far."""
        prefix = np.asarray(prefix, np.int64)
        b, t = prefix.shape
        self._check(t)
        byte = np.arange(256)[None, :]  # (1, 256)
        if t == 0:
            return np.broadcast_to(byte < 0x80, (b, 256)).copy()  # sign bit clear
        if t == 1:
            # After a first byte 0x7F (sign clear, top seven exponent bits set) a second byte >= 0xF0 would
            # set the last four exponent bits too: infinity or NaN.
            top = (prefix[:, 0] - BYTE_OFFSET == 0x7F)[:, None]  # (B, 1)
            return ~(top & (byte >= 0xF0))
        return np.ones((b, 256), bool)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """(..., width) value tokens -> (...) RTTs in ms (the tokenizer's own codec, bit-exact)."""
        return fields.RTT.from_tokens(tokens)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """(n,) RTTs in ms -> (n, width) value tokens (the inverse of :meth:`decode`)."""
        return fields.RTT.to_bytes(np.asarray(values, np.float64)).astype(np.int64) + BYTE_OFFSET

    def _check(self, position: int) -> None:
        if not 0 <= position < self.width:
            raise ValueError(f"RTT value token position {position} outside 0..{self.width - 1}")


V1_RTT_CODE = V1RttCode()
_CODES = {TOKENIZER_NAME: V1_RTT_CODE}


def rtt_code(scheme: str = TOKENIZER_NAME) -> V1RttCode:
    """The ordered RTT code of tokenizer scheme ``scheme`` (a name, as a manifest's ``tokenizer.name``).

    Raises ``ValueError`` for a scheme without one.
    """
    try:
        return _CODES[scheme]
    except KeyError:
        raise ValueError(f"tokenizer scheme {scheme!r} has no ordered RTT code; known: {', '.join(_CODES)}") from None
