"""ping-llm measurement tokenizer. Schemes (``get_scheme``): ``v1``, the seed's (10 role tokens, 256 byte
tokens, PAD; the default, and what the module-level names below describe)."""

from tokenizer.errors import REASONS, REQUIRED_COLUMNS, DecodeError, InvalidMeasurement, SchemaError
from tokenizer.measurement import decode_measurement, encode_measurement, epoch_seconds, split_measurements
from tokenizer.registry import check_tokenizer, get_scheme, scheme_names
from tokenizer.schemes import Parsed, Scheme, TokenizerMismatch
from tokenizer.table import EncodedTable, Validation, check_schema, encode_table, validate_table
from tokenizer.vocab import (
    IPV4_LENGTH,
    IPV6_LENGTH,
    PAD,
    TOKENIZER_NAME,
    TOKENIZER_VERSION,
    VOCAB_SIZE,
    measurement_length,
)

__all__ = [
    "DecodeError",
    "EncodedTable",
    "IPV4_LENGTH",
    "IPV6_LENGTH",
    "InvalidMeasurement",
    "PAD",
    "Parsed",
    "Scheme",
    "TokenizerMismatch",
    "REASONS",
    "REQUIRED_COLUMNS",
    "SchemaError",
    "TOKENIZER_NAME",
    "TOKENIZER_VERSION",
    "VOCAB_SIZE",
    "Validation",
    "check_schema",
    "check_tokenizer",
    "decode_measurement",
    "encode_measurement",
    "encode_table",
    "epoch_seconds",
    "get_scheme",
    "measurement_length",
    "scheme_names",
    "split_measurements",
    "validate_table",
]
