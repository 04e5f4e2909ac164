"""Scheme ``v2``'s vocabulary: the ids, the RTT scale, and what each id opens (layout in :mod:`tokenizer.v2`).

Shared by the scheme's modules (:mod:`tokenizer.v2` and the ``tokenizer.v2_*`` modules it is made of) and its
record grammar (:mod:`tokenizer.grammar_v2`), which all read a stream by these tables. They import this module
(``from tokenizer import vocab_v2 as vocab``) rather than its names one by one.
"""

from __future__ import annotations

import bisect

import numpy as np

# --- ids -------------------------------------------------------------------------------------------
NUM_BYTES = 256  # byte b is id b
SRC4, SRC6 = 256, 257
DST4, DST6 = 258, 259
TIME32, TIME64 = 260, 261
DELTA16 = 262
DELTA_BASE, DELTA_COUNT = 263, 256  # Delta_d, d = 0..255
RTT_FAIL, RTT_EXACT = 519, 520
RTT_COARSE_BASE, RTT_COARSE = 521, 160
RTT_FINE_BASE, RTT_FINE = 681, 64
SIZE16 = 745
SIZE_BASE, SIZE_COUNT = 746, 256  # Size_v, v = 0..255
ERR_BASE, ERR_COUNT = 1002, 256  # Err_v, v = 0..255
PAD = 1258
VOCAB_SIZE = 1259

# --- the RTT scale ---------------------------------------------------------------------------------
RTT_LO = 0.01  # ms: the scale's first edge
RTT_RATIO = 1.002  # one level; the centre is within sqrt(1.002) - 1 = 0.09995% of any value of its level
RTT_LEVELS = RTT_COARSE * RTT_FINE  # 10,240 levels: up to 0.01 * 1.002**10240 = 7.7e6 ms
_EXPONENTS = np.arange(RTT_LEVELS + 1, dtype=np.float64)
RTT_EDGES = RTT_LO * np.power(RTT_RATIO, _EXPONENTS)  # (levels + 1,) level k is [edge k, edge k + 1)
RTT_CENTRES = RTT_LO * np.power(RTT_RATIO, _EXPONENTS[:-1] + 0.5)  # (levels,)
RTT_HI = float(RTT_EDGES[-1])
_EDGE_LIST = RTT_EDGES.tolist()  # bisect on a list: faster than numpy for one value


def rtt_level(rtt: float) -> int | None:
    """The scale level of a positive RTT in [RTT_LO, RTT_HI), else None (failure or escape)."""
    if not RTT_LO <= rtt < RTT_HI:
        return None
    return bisect.bisect_right(_EDGE_LIST, rtt) - 1


def rtt_levels(rtt: np.ndarray) -> np.ndarray:
    """Vectorized :func:`rtt_level`: -1 where the value is off the scale."""
    level = np.searchsorted(RTT_EDGES, rtt, side="right") - 1
    return np.where((rtt >= RTT_LO) & (rtt < RTT_HI), level, -1)


def rtt_scale_tokens(level):
    """The ``(RttCoarse_c, RttFine_f)`` ids of a scale level (an int, or an int array: two arrays)."""
    return RTT_COARSE_BASE + level // RTT_FINE, RTT_FINE_BASE + level % RTT_FINE


SRC_LEN = {4: 5, 6: 17}
DST_LEN = {4: 5, 6: 17}

# --- the record parser's tables ------------------------------------------------------------------

KIND = np.full(1 << 16, -1, np.int8)  # id -> what it opens (ids past the vocabulary: -1, refused)
K_BYTE, K_SRC, K_TIME_ABS, K_DELTA, K_DST, K_SIZE, K_ERR, K_RTT, K_FINE, K_PAD = range(10)
KIND[:NUM_BYTES] = K_BYTE
KIND[[SRC4, SRC6]] = K_SRC
KIND[[TIME32, TIME64]] = K_TIME_ABS
KIND[DELTA16] = K_DELTA
KIND[DELTA_BASE : DELTA_BASE + DELTA_COUNT] = K_DELTA
KIND[[DST4, DST6]] = K_DST
KIND[SIZE16] = K_SIZE
KIND[SIZE_BASE : SIZE_BASE + SIZE_COUNT] = K_SIZE
KIND[ERR_BASE : ERR_BASE + ERR_COUNT] = K_ERR
KIND[[RTT_FAIL, RTT_EXACT]] = K_RTT
KIND[RTT_COARSE_BASE : RTT_COARSE_BASE + RTT_COARSE] = K_RTT
KIND[RTT_FINE_BASE : RTT_FINE_BASE + RTT_FINE] = K_FINE
KIND[PAD] = K_PAD
# How many tokens follow each opening id (payload bytes or the fine RTT token); -1 for ids that open nothing.
FOLLOW = np.full(1 << 16, -1, np.int8)
FOLLOW[[SRC4, DST4, TIME32]] = 4
FOLLOW[[SRC6, DST6]] = 16
FOLLOW[[TIME64, RTT_EXACT]] = 8
FOLLOW[[DELTA16, SIZE16]] = 2
FOLLOW[DELTA_BASE : DELTA_BASE + DELTA_COUNT] = 0
FOLLOW[SIZE_BASE : SIZE_BASE + SIZE_COUNT] = 0
FOLLOW[ERR_BASE : ERR_BASE + ERR_COUNT] = 0
FOLLOW[RTT_FAIL] = 0
FOLLOW[RTT_COARSE_BASE : RTT_COARSE_BASE + RTT_COARSE] = 1
