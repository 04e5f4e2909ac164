"""Write seed-like sample Parquet shards.

    python -m beam_pipelines.make_sample --rows 120000 --shards 4 --output data/sample --seed 0

The rows are :func:`beam_pipelines.make_sample.synth.generate`'s (deterministic for a seed), made a piece at a
time by :class:`~beam_pipelines.make_sample.synth.RowStream`, so memory stays bounded whatever ``--rows`` (its
spill files go to a scratch folder in the output directory, removed at the end); each shard is written under a
temporary name and renamed, so a crash never leaves a partial shard behind.
"""

from __future__ import annotations

import os
import sys
import tempfile

import pyarrow.parquet as pq

from beam_pipelines.common.cli import StrictArgumentParser, parse_options
from beam_pipelines.common.errors import RunError, UsageError, report
from beam_pipelines.common.files import atomic_path
from beam_pipelines.make_sample import synth

DEFAULT_ROW_GROUP = 8192
MAX_ROWS = (1 << 31) - 1  # RowStream packs a row index in 32 bits of its spill files


def _shard_path(output: str, i: int, shards: int) -> str:
    return os.path.join(output, f"part-{i:05d}-of-{shards:05d}.parquet")


def write_shards(table, output: str, shards: int, row_group_size: int = DEFAULT_ROW_GROUP) -> list[str]:
    """Split ``table`` into ``shards`` contiguous Parquet files under ``output``; returns their paths."""
    os.makedirs(output, exist_ok=True)
    n = table.num_rows
    paths = []
    for i in range(shards):
        lo, hi = n * i // shards, n * (i + 1) // shards
        path = _shard_path(output, i, shards)
        with atomic_path(path) as tmp:
            pq.write_table(table.slice(lo, hi - lo), tmp, row_group_size=row_group_size, compression="zstd")
        paths.append(path)
    return paths


def write_stream(rows: int, seed: int, output: str, shards: int, row_group_size: int = DEFAULT_ROW_GROUP, *,
                 chunk_rows: int = synth.CHUNK_ROWS) -> list[str]:
    """Write ``synth.generate(rows, seed)`` as :func:`write_shards` does, byte for byte, without holding it:
    rows come from a :class:`~beam_pipelines.make_sample.synth.RowStream` in pieces of whole row groups
    (about ``chunk_rows`` rows), so each row group holds the same rows as there. Returns the shards' paths."""
    os.makedirs(output, exist_ok=True)
    piece = row_group_size * max(1, chunk_rows // row_group_size)
    paths = []
    with tempfile.TemporaryDirectory(prefix=".make_sample-scratch-", dir=output) as scratch:
        stream = synth.RowStream(rows, seed, scratch, chunk_rows=chunk_rows)
        for i in range(shards):
            lo, hi = rows * i // shards, rows * (i + 1) // shards
            path = _shard_path(output, i, shards)
            with atomic_path(path) as tmp, pq.ParquetWriter(tmp, synth.SCHEMA, compression="zstd") as writer:
                for at in range(lo, hi, piece):
                    writer.write_table(stream.take(min(piece, hi - at)), row_group_size=row_group_size)
            paths.append(path)
    return paths


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; returns 0, 2 for bad options (one ``error:`` line, nothing written), or 1 when the
    shards cannot be written."""
    try:
        args = _parse_args(argv)
    except UsageError as exc:
        return report(exc)
    try:
        paths = write_stream(args.rows, args.seed, args.output, args.shards, args.row_group_size)
    except OSError as exc:
        return report(RunError(f"make_sample failed: cannot write {args.output}: {exc.strerror or exc}"))
    size = sum(os.path.getsize(p) for p in paths)
    print(f"wrote {args.rows:,} rows in {len(paths)} shards to {args.output} ({size / 1e6:.2f} MB)")
    return 0


def _parse_args(argv: list[str] | None):
    """The options, checked; every mistake is a UsageError (argparse's and ours alike)."""
    parser = StrictArgumentParser(prog="python -m beam_pipelines.make_sample", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=120_000, help="rows to generate (default 120000)")
    parser.add_argument("--shards", type=int, default=4, help="number of Parquet files (default 4)")
    parser.add_argument("--output", default="data/sample", help="output directory (default data/sample)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--row_group_size", type=int, default=DEFAULT_ROW_GROUP, help="rows per Parquet row group")
    args = parse_options(parser, argv)
    if args.rows < 1 or args.shards < 1 or args.shards > args.rows:
        parser.error("need rows >= 1 and 1 <= shards <= rows")
    if args.rows > MAX_ROWS:
        parser.error(f"--rows {args.rows} is more than {MAX_ROWS:,}")
    if args.row_group_size < 1:
        parser.error("--row_group_size must be positive")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output} exists and is not a directory")
    return args


if __name__ == "__main__":
    sys.exit(run())
