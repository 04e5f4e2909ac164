"""Copying fixed-width runs of bytes to per-row offsets with one numpy assignment (no per-byte indices).

numpy has no "slice of variable start per row" assignment; a per-element index array (``start[:, None] +
arange(width)``) costs an index build and an element-by-element scatter. Viewing each run as one opaque
``V(width)`` value instead makes the same assignment one memcpy per row::

    spans(buffer, 3)[[0, 10]] = as_blocks(np.array([[1, 2, 3], [4, 5, 6]], np.uint8))
    # buffer[0:3] == [1, 2, 3] and buffer[10:13] == [4, 5, 6]

Used by the table encoder (:mod:`tokenizer.table`) and the record packer
(``beam_pipelines.pretokenize.packing``).
"""

from __future__ import annotations

import numpy as np


def as_blocks(raw: np.ndarray) -> np.ndarray:
    """(n, w) array whose rows are contiguous (last axis of stride itemsize) -> (n,) opaque values of
    ``w * itemsize`` bytes each; a view, no copy."""
    return raw.view(np.dtype((np.void, raw.shape[1] * raw.itemsize)))[:, 0]


def spans(buffer: np.ndarray, nbytes: int) -> np.ndarray:
    """Every run of ``nbytes`` consecutive bytes of the C-contiguous ``buffer`` (any shape, read flat), as
    one opaque value each.

    ``spans(buf, w)[i]`` is the ``w`` bytes at *byte* offset ``i`` of the flat buffer (for uint16 tokens,
    token ``t`` starts at byte ``2 * t``); the values overlap, so assign only runs that do not. A
    writeable view of ``buffer``. Raises ``ValueError`` when ``buffer`` is not C-contiguous (a flat copy
    would silently take the writes).
    """
    if not buffer.flags.c_contiguous:
        raise ValueError("spans: the buffer must be C-contiguous")
    flat = buffer.reshape(-1).view(np.uint8)
    window = np.lib.stride_tricks.as_strided(
        flat, shape=(len(flat) - nbytes + 1, nbytes), strides=(1, 1), writeable=True
    )
    return as_blocks(window)
