"""What each ArrayRecord compression costs for pretokenize's records: writing, reading back, and bytes.

    python benchmarks/record_compression_bench.py [--dataset DS] [--records 20000] [--repeat 3]

The records are real packed records: the train split of ``--dataset`` (a pretokenized dataset), or, by
default, the bundled sample pretokenized here in-process (``--in_process``, no Beam). The first
``--records`` of them (repeated if the split holds fewer) are written with each codec the way the job
writes them (``group_size:1``, one record per chunk, ``max_parallelism:1``: one writer per worker), then
read back the way the trainer reads them (one batched ``read`` of 64 random indices at a time, one reader
thread). Reported per record: CPU seconds to write and to read (``time.process_time``, median of
``--repeat``), and bytes on disk. Everything in one process, one codec after the other, in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from common import machine  # benchmarks/common.py (the script's folder is on sys.path)

from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.records import read_records, writer_options
from beam_pipelines.pretokenize import pipeline as pretokenize
from beam_pipelines.pretokenize.options import DEFAULT_COMPRESSION

CODECS = ("snappy", "zstd:1", "zstd:3", "zstd:-3", "brotli:1", "uncompressed")
READ_BATCH = 64


def load_records(dataset: str, n: int) -> np.ndarray:
    """The first ``n`` train records of ``dataset`` as (n, seq_len) little-endian uint16 (repeated if fewer)."""
    manifest = manifest_lib.read_manifest(dataset)
    seq_len = manifest["seq_len"]
    blocks, have = [], 0
    for entry in manifest["splits"]["train"]["files"]:
        blocks.append(read_records(os.path.join(dataset, entry["path"]), seq_len))
        have += len(blocks[-1])
        if have >= n:
            break
    records = np.concatenate(blocks)
    return np.ascontiguousarray(np.resize(records, (n, seq_len)).astype("<u2"))


def write_cost(path: str, rows: list[bytes], codec: str) -> float:
    start = time.process_time()
    writer = ArrayRecordWriter(path, writer_options(codec))
    for row in rows:
        writer.write(row)
    writer.close()
    return (time.process_time() - start) / len(rows)


def read_cost(path: str, n: int, seed: int) -> float:
    order = np.random.default_rng(seed).permutation(n).tolist()
    reader = ArrayRecordReader(path, "readahead_buffer_size:0,max_parallelism:1")
    try:
        start = time.process_time()
        for lo in range(0, n, READ_BATCH):
            reader.read(order[lo : lo + READ_BATCH])
        return (time.process_time() - start) / n
    finally:
        reader.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="a pretokenized dataset (default: the bundled sample, pretokenized here)")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="compression-bench-") as work:
        dataset = args.dataset
        if dataset is None:
            dataset = os.path.join(work, "sample")
            if pretokenize.run(["--output", dataset, "--in_process"]) != 0:
                raise SystemExit("pretokenize of the bundled sample failed")
        records = load_records(dataset, args.records)
        rows = [r.tobytes() for r in records]
        print(f"{len(rows):,} records of {records.shape[1]} tokens from {dataset}", flush=True)
        results = []
        for codec in CODECS:
            path = os.path.join(work, f"{codec.replace(':', '_')}.array_record")
            writes = [write_cost(path, rows, codec) for _ in range(args.repeat)]
            reads = [read_cost(path, len(rows), seed) for seed in range(args.repeat)]
            results.append((codec, statistics.median(writes), statistics.median(reads), os.path.getsize(path) / len(rows)))
            print(f"{codec}: write {1e6 * results[-1][1]:.1f} us, read {1e6 * results[-1][2]:.1f} us", flush=True)
    base = next(r for r in results if r[0] == "zstd:3")
    print()
    print("| compression | write, µs CPU per record | read, µs CPU per record | bytes per record | vs zstd:3 (write / read / bytes) |")
    print("|---|---|---|---|---|")
    for codec, write, read, size in results:
        name = f"{codec} (default)" if codec == DEFAULT_COMPRESSION else codec
        print(
            f"| {name} | {1e6 * write:.1f} | {1e6 * read:.1f} | {size:,.0f} | "
            f"{write / base[1]:.2f}x / {read / base[2]:.2f}x / {size / base[3]:.2f}x |"
        )
    print(f"\nmachine: {machine()}; load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
