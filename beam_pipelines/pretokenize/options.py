"""Pretokenize's options: the command line parsed into :class:`Options` (Apache Beam's own options are
passed through to Beam), with the defaults of the options that shape the output (:data:`SHAPING_DEFAULTS`,
which an append takes from its dataset instead).
"""

from __future__ import annotations

import dataclasses
import os

from beam_pipelines.common import storage
from beam_pipelines.common.cli import StrictArgumentParser, add_output_modes, fields_from, parse_job_args
from beam_pipelines.common.errors import UsageError
from beam_pipelines.common.lifecycle import beam_storage_options
from beam_pipelines.dataset.records import check_compression
from beam_pipelines.pretokenize.splitting import parse_fractions
from tokenizer import TOKENIZER_NAME, get_scheme, scheme_names

# The bundled sample, beside the package in a checkout: beam_pipelines/pretokenize/options.py -> repo root.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_INPUT = os.path.join(_REPO_ROOT, "data", "sample", "*.parquet")
DEFAULT_BUCKET_ROWS = 1_000_000
RUNNER_OPTIONS = ("--runner", "--direct_running_mode", "--direct_num_workers")


@dataclasses.dataclass(frozen=True)
class Options:
    """Parsed job options (the non-Beam ones)."""

    input: str
    output: str
    seq_len: int
    split: tuple[float, float, float]
    split_by: str
    compression: str
    tmp_compression: str
    overwrite: bool
    bucket_rows: int
    append: bool = False  # add a version to the dataset in --output (shaping options taken from it)
    in_process: bool = False  # run the stages in this process without Beam (local.py)
    given: frozenset = frozenset()  # the shaping options given on the command line (SHAPING_OPTIONS names)
    temp_location: str = ""  # Beam's --temp_location (scratch goes there when given)
    fs_options: dict = dataclasses.field(default_factory=dict)  # Beam's filesystem options (S3, GCS)
    tokenizer: str = TOKENIZER_NAME  # tokenizer scheme (tokenizer.get_scheme); an append takes the dataset's
    tokenizer_given: bool = False  # --tokenizer was on the command line (an append refuses another scheme)


# snappy rather than zstd:3: a third of the CPU of writing 2 KB records (one chunk each) and cheaper to read
# back in training, for files about a third larger (docs/performance.md, "Record compression").
DEFAULT_COMPRESSION = "snappy"
# The options that shape the output, with their defaults: an append takes them from the dataset and
# refuses a given value that differs (a default is applied only when the option is not given).
SHAPING_DEFAULTS = {"seq_len": 1024, "split": "80,10,10", "split_by": "src", "compression": DEFAULT_COMPRESSION, "bucket_rows": DEFAULT_BUCKET_ROWS}


def parse_args(argv):
    parser = StrictArgumentParser(
        prog="python -m beam_pipelines.pretokenize",
        description="Pack Parquet ping measurements into seq_len-token ArrayRecord splits with a manifest. "
        "Apache Beam's own options (e.g. --runner, --direct_num_workers) are passed to Beam; any other "
        "option is refused (exit 2).",
    )
    parser.add_argument("--input", default=DEFAULT_INPUT, help="Parquet file, directory or glob (default: the bundled sample)")
    parser.add_argument("--output", default="out", help="output directory (default ./out)")
    parser.add_argument("--seq_len", type=int, help="tokens per record (default 1024)")
    parser.add_argument(
        "--tokenizer",
        choices=scheme_names(),
        help="tokenizer scheme (docs/tokenizer.md): v1, the seed's (default), or v2, the compact one; an "
        "append keeps the dataset's",
    )
    parser.add_argument("--split", help="train,val,test shares (default 80,10,10)")
    parser.add_argument("--split_by", choices=("src", "time"), help="split by source address (default) or by time")
    parser.add_argument("--compression", help="ArrayRecord compression: snappy (default), zstd[:LEVEL] (smaller files, about 3x the CPU to write), brotli[:LEVEL] or uncompressed")
    parser.add_argument(
        "--tmp_compression",
        choices=("none", "lz4", "zstd"),
        default=None,
        help="compression of the temporary bucket files: none (fastest, about 156 bytes per row of scratch "
        "space), lz4 (about 72) or zstd (default none; lz4 when the scratch is in an object store, where "
        "every byte goes up and comes back over the network)",
    )
    add_output_modes(
        parser,
        overwrite="replace a different dataset in --output",
        append="add the inputs that the dataset in --output does not hold yet as a new version (its files are "
        "left as they are; shaping options are taken from the dataset)",
    )
    parser.add_argument(
        "--in_process",
        action="store_true",
        help="run the stages in this process without Apache Beam (same output; no runner start-up, one core): "
        "for small inputs such as an hourly append; cannot be combined with a runner option",
    )
    parser.add_argument(
        "--bucket_rows",
        type=int,
        help="about this many rows per grouping bucket; bounds each worker's memory (default 1000000)",
    )
    args, beam_args = parse_job_args(parser, argv)
    given = frozenset(k for k in SHAPING_DEFAULTS if getattr(args, k) is not None)
    for key, default in SHAPING_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    try:
        if args.append and args.overwrite:
            raise UsageError(
                "--append and --overwrite cannot be combined: --append adds a version to the dataset in "
                "--output, --overwrite replaces it"
            )
        if args.in_process and any(a.startswith(RUNNER_OPTIONS) for a in beam_args):
            chosen = " ".join(a for a in beam_args if a.startswith(RUNNER_OPTIONS))
            raise UsageError(f"--in_process runs without Apache Beam; it cannot be combined with {chosen}")
        scheme = get_scheme(args.tokenizer or TOKENIZER_NAME)
        if args.seq_len < scheme.min_seq_len or args.seq_len > 65536:
            raise UsageError(
                f"--seq_len {args.seq_len}: must be between {scheme.min_seq_len} (the longest {scheme.name} "
                "measurement) and 65536"
            )
        if args.bucket_rows < 1:
            raise UsageError("--bucket_rows must be positive")
        temp_location, fs_options = beam_storage_options(beam_args)
        tmp_compression = args.tmp_compression or ("lz4" if storage.is_remote(temp_location or args.output) else "none")
        options = fields_from(  # input, output, seq_len, split_by, overwrite, bucket_rows, append, in_process as parsed
            Options,
            args,
            split=parse_fractions(args.split),
            compression=check_compression(args.compression),
            tmp_compression=tmp_compression,
            given=given,
            temp_location=temp_location,
            fs_options=fs_options,
            tokenizer=scheme.name,
            tokenizer_given=args.tokenizer is not None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return options, beam_args
