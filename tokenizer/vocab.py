"""Vocabulary and block layout of tokenizer scheme ``v1`` (the seed's scheme).

This module is the one place where token ids and block sizes are defined; everything else
(pipeline, trainer, evaluation) imports them from here.
"""

from __future__ import annotations

import itertools

import numpy as np

# Role tokens (ids 0-9). They never appear as byte tokens, so a stream can be cut into
# measurements and field blocks without side information.
MEASUREMENT_START = 0
SRC_IP_START = 1
DEST_IP_START = 2
IPV4_START = 3
IPV6_START = 4
RTT_START = 5
SIZE_START = 6
ERROR_COUNT_START = 7
TIMESTAMP_START = 8
MSM_ID_START = 9

ROLE_NAMES = (
    "MeasurementStart",
    "SrcIpStart",
    "DestIpStart",
    "Ipv4Start",
    "Ipv6Start",
    "RttStart",
    "SizeStart",
    "ErrorCountStart",
    "TimestampStart",
    "MsmIdStart",
)
NUM_ROLES = len(ROLE_NAMES)

BYTE_OFFSET = 10  # byte b is token id BYTE_OFFSET + b
PAD = 266  # padding id, only ever a suffix of a record
VOCAB_SIZE = 267  # 10 roles + 256 bytes + PAD

TOKENIZER_NAME = "v1"
TOKENIZER_VERSION = 1

# Canonical block numbering; the field order of a measurement is a permutation of these.
BLOCK_SRC, BLOCK_DST, BLOCK_RTT, BLOCK_SIZE, BLOCK_ERRORS, BLOCK_TIMESTAMP, BLOCK_MSM_ID = range(7)
NUM_BLOCKS = 7
BLOCK_NAMES = ("src_addr", "dst_addr", "rtt", "size", "packet_error_count", "timestamp", "msm_id")
BLOCK_ROLE = np.array(
    [SRC_IP_START, DEST_IP_START, RTT_START, SIZE_START, ERROR_COUNT_START, TIMESTAMP_START, MSM_ID_START],
    dtype=np.uint16,
)

# All 7! = 5040 block orders in lexicographic order; the order index of a measurement picks a row.
PERMUTATIONS = np.array(list(itertools.permutations(range(NUM_BLOCKS))), dtype=np.int8)  # (5040, 7)
NUM_ORDERS = len(PERMUTATIONS)


def block_lengths(ip_version: int) -> tuple[int, ...]:
    """Token length of each canonical block (role token included) for one address family."""
    addr = 2 + (4 if ip_version == 4 else 16)  # role + family token + address bytes
    return (addr, addr, 1 + 8, 1 + 2, 1 + 1, 1 + 8, 1 + 8)


def measurement_length(ip_version: int) -> int:
    """Tokens in one measurement: 45 for IPv4, 69 for IPv6."""
    return 1 + sum(block_lengths(ip_version))


IPV4_LENGTH = measurement_length(4)  # 45
IPV6_LENGTH = measurement_length(6)  # 69
