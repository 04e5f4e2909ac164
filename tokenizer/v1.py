"""Scheme ``v1`` (the seed's) as a :class:`~tokenizer.schemes.Scheme` object, and its vectorized record parser.

The layout (tokenizer.vocab, tokenizer.fields): ``[MeasurementStart]`` then seven field blocks in a
content-derived order, each opened by its role token; role ids never occur as byte tokens, so every block of
a measurement is found by looking for its role token in the flat token array: one ``MeasurementStart`` per
measurement and one of each block role, in the same order as the measurements. Payloads are gathered from a
sliding-window view and decoded by the field codecs on whole arrays (no per-measurement Python).
"""

from __future__ import annotations

import numpy as np

from tokenizer import fields, grammar
from tokenizer.errors import DecodeError
from tokenizer.schemes import FieldSpec, Parsed, RttCodec, Scheme, Survey
from tokenizer.table import encode_table
from tokenizer.vocab import (
    BLOCK_NAMES,
    BLOCK_ROLE,
    BLOCK_RTT,
    BYTE_OFFSET,
    DEST_IP_START,
    ERROR_COUNT_START,
    IPV4_START,
    IPV6_START,
    MEASUREMENT_START,
    MSM_ID_START,
    NUM_ROLES,
    PAD,
    PERMUTATIONS,
    ROLE_NAMES,
    RTT_START,
    SIZE_START,
    SRC_IP_START,
    TIMESTAMP_START,
    TOKENIZER_NAME,
    TOKENIZER_VERSION,
    VOCAB_SIZE,
    block_lengths,
    measurement_length,
)

_V4_MAPPED = np.uint64(0xFFFF << 32)
_BYTE_IDS = np.arange(BYTE_OFFSET, BYTE_OFFSET + 256, dtype=np.int64)  # byte tokens in byte order
_TAIL = max(block_lengths(6)) - 1  # tokens a window may reach past a role token (family + 16 address bytes)


def _role_positions(flat: np.ndarray, role: int, n: int, seq_len: int, first_record: int) -> np.ndarray:
    pos = np.flatnonzero(flat == role)
    if len(pos) != n:
        raise DecodeError(
            f"records {first_record}..{first_record + len(flat) // seq_len - 1}: {n} measurements but "
            f"{len(pos)} blocks with role token {role}"
        )
    return pos


def _windows(padded: np.ndarray, pos: np.ndarray, offset: int, width: int) -> np.ndarray:
    """(n, width) tokens from ``pos + offset`` on, as a gather of rows of a sliding-window view (no (n, width)
    index array); ``padded`` is the flat block followed by ``_TAIL`` copies of its last token, so a window
    that runs past the end reads that token, as clipping the positions would."""
    return np.lib.stride_tricks.sliding_window_view(padded, width)[pos + offset]


def _address_keys(flat: np.ndarray, pos: np.ndarray, first_record: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) uint64 keys and (n,) int8 families of the address blocks whose role tokens sit at ``pos``
    (``flat``: padded, see :func:`_windows`)."""
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
    return keys, np.where(v4, 4, 6).astype(np.int8)


def _payload(flat: np.ndarray, pos: np.ndarray, codec) -> np.ndarray:
    return codec.from_tokens(_windows(flat, pos, 1, codec.width).astype(np.int64))  # (n, width) tokens


def parse_records(records: np.ndarray, *, first_record: int = 0) -> Parsed:
    """The measurements of a block of v1 records ((records, seq_len) uint16), in reading order.

    Raises :class:`~tokenizer.errors.DecodeError` naming the record on a malformed token stream.
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
    pos = {
        role: _role_positions(flat, role, n, seq_len, first_record)
        for role in (SRC_IP_START, DEST_IP_START, RTT_START, SIZE_START, ERROR_COUNT_START, TIMESTAMP_START,
                     MSM_ID_START)
    }
    following = np.append(starts[1:], len(flat))
    for p in pos.values():  # the k-th block of each kind is in the k-th measurement
        if n and not (np.all(p > starts) & np.all(p < following)):
            raise DecodeError(f"records {first_record}..{first_record + n_rec - 1}: a measurement lacks a block")
    tail = flat[-1:] if len(flat) else np.array([PAD], flat.dtype)
    padded = np.concatenate([flat, np.repeat(tail, _TAIL)])  # see _windows
    src, family = _address_keys(padded, pos[SRC_IP_START], first_record, seq_len)
    dst, _ = _address_keys(padded, pos[DEST_IP_START], first_record, seq_len)
    return Parsed(
        record=rec.astype(np.int64) + first_record,
        start=start.astype(np.int32),
        end=end.astype(np.int32),
        family=family,
        src=src,
        dst=dst,
        rtt=_payload(padded, pos[RTT_START], fields.RTT).astype(np.float64),
        timestamp=_payload(padded, pos[TIMESTAMP_START], fields.TIMESTAMP).astype(np.int64),
        size=_payload(padded, pos[SIZE_START], fields.SIZE).astype(np.int64),
        errors=_payload(padded, pos[ERROR_COUNT_START], fields.ERRORS).astype(np.int64),
        msm_id=_payload(padded, pos[MSM_ID_START], fields.MSM_ID).astype(np.int64),
        rtt_pos=pos[RTT_START].astype(np.int64) + 1,
        dst_pos=pos[DEST_IP_START].astype(np.int64),
        blocks=np.stack([pos[int(role)] for role in BLOCK_ROLE], axis=1).astype(np.int64),  # (n, 7) canonical
    )


def survey(records: np.ndarray) -> Survey:
    """Counts by role tokens alone: every ``MeasurementStart`` begins a measurement and every ``SrcIpStart``
    a source block ``[SrcIpStart, Ipv4Start|Ipv6Start, 4|16 bytes]`` (blocks cut short by the end are left
    out); a non-empty record must begin with ``MeasurementStart``."""
    records = np.asarray(records)
    flat = records.reshape(-1)
    at = np.flatnonzero(flat == SRC_IP_START)
    at = at[at + 2 < len(flat)]
    family = flat[at + 1]
    keys, families, counts = [], [], []
    for fam_token, nbytes, fam in ((IPV4_START, 4, 4), (IPV6_START, 16, 6)):
        pos = at[family == fam_token]
        pos = pos[pos + 2 + nbytes <= len(flat)]
        counts.append(len(pos))
        raw = (flat[pos[:, None] + 2 + np.arange(nbytes)].astype(np.int64) - BYTE_OFFSET).astype(np.uint8)
        key = np.zeros((len(pos), 2), np.uint64)
        if nbytes == 4:
            key[:, 1] = _V4_MAPPED | np.ascontiguousarray(raw).view(">u4")[:, 0].astype(np.uint64)
        else:
            key[:] = np.ascontiguousarray(raw).view(">u8").astype(np.uint64)
        keys.append(key)
        families.append(np.full(len(pos), fam, np.int8))
    starts = records == MEASUREMENT_START
    empty = records[:, 0] == PAD
    return Survey(
        measurements=starts.sum(axis=1).astype(np.int64),
        starts_ok=empty | (records[:, 0] == MEASUREMENT_START),
        source_family=np.concatenate(families),
        source_key=np.concatenate(keys),
        ipv4_measurements=counts[0],
        ipv6_measurements=counts[1],
    )


_IS_BLOCK_ROLE = np.zeros(PAD + 1, dtype=bool)
_IS_BLOCK_ROLE[BLOCK_ROLE] = True
_IS_STRUCTURE_ROLE = _IS_BLOCK_ROLE.copy()
_IS_STRUCTURE_ROLE[MEASUREMENT_START] = True
# Role ids below NUM_ROLES that do not delimit blocks (the address-family tokens inside address blocks).
_INNER_ROLES = tuple(int(r) for r in np.flatnonzero(~_IS_STRUCTURE_ROLE[:NUM_ROLES]))
NUM_BLOCKS = len(BLOCK_ROLE)


def block_structure(flat: np.ndarray, seq_len: int):
    """Measurement starts (M,), block starts (M, 7) in stored order, block lengths (M, 7) and the non-PAD count
    of a flat batch of v1 records (the fast path of field-order augmentation); DecodeError when malformed."""
    # MeasurementStart and the block roles are ~8 of a measurement's ~55 tokens: one pass of cheap
    # comparisons over the batch marks them, and every later step works on the short list of positions
    # (boolean indexing of a longer role list cost more than these comparisons).
    marks = flat < NUM_ROLES
    for role in _INNER_ROLES:
        marks &= flat != role
    pos = np.flatnonzero(marks)  # (M * 8,) positions of MeasurementStart and block roles, sorted
    ids = flat[pos]  # (M * 8,)
    m = int(np.count_nonzero(ids == MEASUREMENT_START))
    if len(ids) != (NUM_BLOCKS + 1) * m:
        raise DecodeError(f"{m} measurements but {len(ids) - m} field blocks (expected {NUM_BLOCKS} each)")
    ids, pos = ids.reshape(m, NUM_BLOCKS + 1), pos.reshape(m, NUM_BLOCKS + 1)  # (M, 8)
    # Only MeasurementStart has id 0, so each row must be one MeasurementStart then seven block roles.
    if m and (np.any(ids[:, 0] != MEASUREMENT_START) or np.any(ids[:, 1:] == MEASUREMENT_START)):
        raise DecodeError("field blocks are not grouped seven to a measurement")
    meas, blocks = pos[:, 0], np.ascontiguousarray(pos[:, 1:])  # (M,), (M, 7)
    if m and not np.array_equal(blocks[:, 0], meas + 1):
        raise DecodeError("a MeasurementStart must be followed directly by a field block")
    # End of each record's body: its first PAD, or the record's end.
    is_pad = flat == PAD
    rows = is_pad.reshape(-1, seq_len)  # (B, L)
    body_len = np.where(rows.any(axis=1), rows.argmax(axis=1), seq_len)  # (B,)
    body_end = np.arange(len(rows)) * seq_len + body_len  # (B,)
    # A block ends where the next block starts; a measurement's last block where the next measurement
    # starts, or at its record's body end when that comes first (the next measurement is in another record).
    ends = np.empty_like(blocks)  # (M, 7)
    ends[:, :-1] = blocks[:, 1:]
    next_meas = np.append(meas[1:], np.iinfo(np.int64).max)  # (M,)
    ends[:, -1] = np.minimum(next_meas, body_end[meas // seq_len]) if m else 0
    lengths = ends - blocks  # (M, 7)
    if m and lengths.min() < 2:  # every block is a role and at least one byte
        raise DecodeError("a field block is cut short (PAD inside a measurement)")
    return meas, blocks, lengths, len(flat) - int(np.count_nonzero(is_pad))



class _V1Rtt(RttCodec):
    """v1's RTT: ``RttStart`` then a big-endian IEEE-754 float64, bit-exact.

    For non-negative doubles the order of the values is the lexicographic order of their big-endian bytes,
    so byte order is value order at every position. A first byte of 0x80 or more sets the sign bit: a
    negative value, of which the failure (-1.0, ``BF F0 00 ..``) is the one the data holds. After a first
    byte 0x7F a second byte of 0xF0 or more makes infinity or NaN: the success mask leaves those out.
    """

    role = RTT_START
    width = fields.RTT.width
    failure_tokens = np.arange(BYTE_OFFSET + 0x80, BYTE_OFFSET + 256, dtype=np.int64)
    rel_error = 0.0
    lo_ms = 0.0
    hi_ms = float(np.finfo(np.float64).max)

    def grammar_tokens(self, position: int) -> np.ndarray:
        self._check(position)
        return _BYTE_IDS

    def value_tokens(self, position: int) -> np.ndarray:
        self._check(position)
        return _BYTE_IDS

    def success_mask(self, prefix: np.ndarray) -> np.ndarray:
        prefix = np.asarray(prefix, np.int64)
        b, t = prefix.shape
        self._check(t)
        byte = np.arange(256)[None, :]  # (1, 256)
        if t == 0:
            return np.broadcast_to(byte < 0x80, (b, 256)).copy()  # sign bit clear
        if t == 1:
            top = (prefix[:, 0] - BYTE_OFFSET == 0x7F)[:, None]  # (B, 1)
            return ~(top & (byte >= 0xF0))
        return np.ones((b, 256), bool)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return fields.RTT.from_tokens(np.asarray(tokens).astype(np.int64)).astype(np.float64)

    def encode(self, values: np.ndarray) -> np.ndarray:
        return fields.RTT.to_bytes(np.asarray(values, np.float64)).astype(np.int64) + BYTE_OFFSET


_BLOCK_KIND = np.full(VOCAB_SIZE, -1, dtype=np.int32)
_BLOCK_KIND[MEASUREMENT_START] = MEASUREMENT_START
_BLOCK_KIND[BLOCK_ROLE] = BLOCK_ROLE  # a block's kind is its role id (the field-embedding rows of before)
_IS_ROLE = np.zeros(VOCAB_SIZE, bool)
_IS_ROLE[:NUM_ROLES] = True
_IS_BYTE = np.zeros(VOCAB_SIZE, bool)
_IS_BYTE[BYTE_OFFSET : BYTE_OFFSET + 256] = True
_IS_PAD = np.zeros(VOCAB_SIZE, bool)
_IS_PAD[PAD] = True


class SchemeV1(Scheme):
    """The seed's scheme: 10 role tokens, 256 byte tokens (ids 10-265), PAD 266; 45/69 tokens a measurement."""

    name = TOKENIZER_NAME
    version = TOKENIZER_VERSION
    vocab_size = VOCAB_SIZE
    pad_id = PAD
    keeps_msm_id = True
    min_seq_len = measurement_length(6)
    item_lengths = (measurement_length(4), measurement_length(6))  # the packer's two item lengths
    rtt = _V1Rtt()
    field_spec = FieldSpec(block_kind=_BLOCK_KIND, kinds=NUM_ROLES, max_offset=max(block_lengths(6)) - 1)
    token_names = (*ROLE_NAMES, *(f"byte{b:02x}" for b in range(256)), "PAD")
    block_names = BLOCK_NAMES
    field_orders = PERMUTATIONS
    # src, dst, size, errors, timestamp, msm_id, then rtt
    eval_order = int(np.flatnonzero((PERMUTATIONS == np.array([0, 1, 3, 4, 5, 6, 2])).all(axis=1))[0])
    # a block's kind is its role id; MeasurementStart and the family tokens count as "role"
    structural_ids = _IS_ROLE  # role ids (MeasurementStart and the family tokens too) count as the "role" kind
    kind_names = ("role", "src_addr", "dst_addr", "role", "role", "rtt", "size", "errors", "timestamp", "msm_id")
    token_groups = {"role_tokens": _IS_ROLE, "byte_tokens": _IS_BYTE, "pad_tokens": _IS_PAD}
    grammar = grammar  # tokenizer.grammar: the measurement state machine for constrained decoding
    restart_id = MEASUREMENT_START  # what a finished sample feeds the model while others finish
    legend = f"green: roles 0-{NUM_ROLES - 1}, blue: bytes {BYTE_OFFSET}-{BYTE_OFFSET + 255}, grey: PAD {PAD}"

    def encode_table(self, table):
        """:func:`tokenizer.table.encode_table` (one row's tokens do not depend on other rows in v1)."""
        return encode_table(table)

    def parse_records(self, records: np.ndarray, *, first_record: int = 0) -> Parsed:
        return parse_records(records, first_record=first_record)

    def survey(self, records: np.ndarray) -> Survey:
        return survey(records)

    @staticmethod
    def block_structure(flat: np.ndarray, seq_len: int):
        return block_structure(flat, seq_len)

    def rtt_prompt_at(self, record: np.ndarray, start: int, end: int) -> np.ndarray:
        """The record before the measurement, ``MeasurementStart``, its blocks other than the RTT in canonical
        order, then ``RttStart`` (its on-disk block order is a hash of the whole row, RTT included, so it is
        not kept)."""
        blocks = grammar.split_blocks(np.asarray(record[start:end], np.int64))
        body = [np.array([MEASUREMENT_START])]
        body += [blocks[b] for b in range(NUM_BLOCKS) if b != BLOCK_RTT]
        body.append(np.array([RTT_START]))
        return np.concatenate([np.asarray(record[:start], dtype=np.int64), *body]).astype(np.int64)

    def sample_state(self, prompt: np.ndarray):
        """A v1 measurement is self-contained: the state of the prompt's last measurement, from its
        ``MeasurementStart``."""
        return grammar.state_of(self.current_measurement(prompt))

    def decode_sample(self, prompt: np.ndarray, generated: np.ndarray) -> dict:
        generated = np.asarray(generated)
        tokens = np.concatenate([self.current_measurement(prompt), generated[generated != PAD]])
        return self.decode_record(tokens)[0]

    @staticmethod
    def current_measurement(prompt) -> np.ndarray:
        """The tokens of the measurement a prompt ends in: from its last MeasurementStart."""
        return _current_measurement(prompt)


def _current_measurement(prompt) -> np.ndarray:
    prompt = np.asarray(prompt)
    starts = np.flatnonzero(prompt == MEASUREMENT_START)
    if not len(starts):
        raise grammar.GrammarError("a prompt must contain the MeasurementStart of the measurement to complete")
    return prompt[starts[-1] :]


V1 = SchemeV1()
