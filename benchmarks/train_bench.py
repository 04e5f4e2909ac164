"""Trainer throughput, model FLOPs utilisation, and the input pipeline's rate measured alone.

    python benchmarks/train_bench.py [CONFIG|PRESET] [key=value ...] [--steps 10] [--input_batches 200]
        [--peak_flops F] [--json OUT.json] [--input_only]

* trainer: the jitted ``train_step`` of ``trainer.steps`` on one real batch, repeated (compute only, on all
  local devices), after two warm-up steps (compilation). Reports the median step time, tokens/s, records/s.
* MFU: ``flops_per_token * tokens/s / peak``. ``flops_per_token`` is ``trainer.model.flops_per_token``
  (6 x matmul parameters + 12 x layers x seq x width). ``peak`` is, in this order: ``--peak_flops``; the
  datasheet dense bf16 (or tf32 for float32) peak of a known GPU, times the device count; else *measured*:
  the best rate of a jitted 2048x2048 matmul in the model's compute dtype on this backend (on CPU that is
  the only honest peak there is, so CPU MFU is relative to what XLA's matmul reaches on the same cores).
* input: ``trainer.train_stream.train_iterator`` with the config's prefetch settings and augmentation, batches
  pulled as fast as possible; records/s and the ratio to what the trainer consumes (must be >= 10).
* ``--input_only``: the input pipeline alone, against a naive loop measured in the same run (one record at
  a time through ``ArrayRecordDataSource``, parsed with ``numpy.frombuffer``, no augmentation), with the
  read and augment time per record measured separately, records/s for 1..cores worker processes, and the
  CPU time per record of the training process and of the workers (from /proc) for each.

With no ``data_dir`` on disk the bundled sample is pretokenized into a temporary directory first.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import tempfile
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
from common import machine  # benchmarks/common.py (the script's folder is on sys.path)
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from beam_pipelines.common.cores import usable_cores
from beam_pipelines.dataset import MANIFEST_NAME
from beam_pipelines.pretokenize import pipeline as pretokenize
from trainer import augment, data, example, prefetch, record_reader, train_state, train_stream
from trainer import model as model_lib
from trainer.config import load_config
from trainer.steps import make_train_step

# Dense peak FLOP/s per device from datasheets (SXM parts), by compute dtype.
_PEAKS = {
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # float32 runs as TF32 on tensor cores
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}


def measured_matmul_peak(dtype: str, n: int = 2048, repeats: int = 20) -> float:
    """Best FLOP/s of a jitted n x n x n matmul on the default device."""
    rng = np.random.default_rng(0)  # random operands: constant ones ran 3x faster than real data on CPU
    a = jnp.asarray(rng.standard_normal((n, n)), dtype)
    b = jnp.asarray(rng.standard_normal((n, n)), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peak_flops(dtype: str, override: float | None) -> tuple[float, str]:
    if override:
        return override, "given (--peak_flops)"
    kind = jax.devices()[0].device_kind
    for name, peaks in _PEAKS.items():
        if name in kind:
            n = jax.local_device_count()
            return peaks[dtype] * n, f"datasheet {name} dense {dtype} x {n}"
    per_device = measured_matmul_peak(dtype)
    n = jax.local_device_count()
    return per_device * n, f"measured 2048^3 {dtype} matmul on {kind} x {n}"


def ensure_dataset(data_dir: str) -> str:
    if os.path.isfile(os.path.join(data_dir, MANIFEST_NAME)):
        return data_dir
    out = os.path.join(tempfile.mkdtemp(prefix="train_bench_"), "sample")
    print(f"{data_dir} has no dataset; pretokenizing the bundled sample into {out}", file=sys.stderr)
    if pretokenize.run(["--output", out, "--direct_running_mode=in_memory"]) != 0:
        raise SystemExit("pretokenize failed")
    return out


def bench_trainer(config, dataset, steps: int) -> dict:
    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_lib.create(config.model, config.seed)))
    tx, schedule = train_state.make_optimizer(config)
    init_state = functools.partial(train_state.init_state, config, tx)
    state_sharding = jax.tree.map(lambda _: replicated, jax.eval_shape(init_state))
    state = jax.jit(init_state, out_shardings=state_sharding)()
    step = jax.jit(
        make_train_step(graphdef, tx, schedule, config),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )
    iterator = train_stream.train_iterator(dataset, config)
    batch = next(iterator)
    if hasattr(iterator, "close"):
        iterator.close()  # worker processes
    batch = {k: jax.device_put(v, batch_sharding) for k, v in batch.items()}
    t0 = time.perf_counter()
    for _ in range(2):  # compile + one warm step
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):  # each step timed alone; the median resists other load on shared machines
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    tokens = config.batch_size * config.seq_len
    return {
        "step_seconds": step_s,
        "step_seconds_best": float(min(times)),
        "warmup_seconds": compile_s,
        "tokens_per_sec": tokens / step_s,
        "records_per_sec": config.batch_size / step_s,
    }


def _cpu_seconds(pid: int | None = None) -> tuple[float, float]:
    """(this process, its descendants) CPU seconds, user + system, read from /proc (0.0 elsewhere). The
    worker processes are still running when this is read, so ``os.times`` (children that ended) cannot."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def stat(p: int) -> float:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except OSError:
            return 0.0

    def children(p: int) -> list[int]:
        out = []
        try:
            for task in os.listdir(f"/proc/{p}/task"):  # processes started by any thread
                with open(f"/proc/{p}/task/{task}/children") as f:
                    out += [int(c) for c in f.read().split()]
        except OSError:
            pass
        return out

    pid = pid or os.getpid()
    seen, stack = 0.0, children(pid)
    while stack:
        c = stack.pop()
        seen += stat(c)
        stack += children(c)
    return stat(pid), seen


def bench_input(config, dataset, batches: int) -> dict:
    iterator = train_stream.train_iterator(dataset, config)
    try:
        # Start the threads or worker processes: three Grain elements (getattr: the same script also runs
        # on a checkout from before elements held several batches, for a same-run comparison).
        for _ in range(3 * getattr(data, "chunk_batches", lambda b: 1)(config.batch_size)):
            next(iterator)
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        elapsed = time.perf_counter() - t0
        cpu1 = _cpu_seconds()
    finally:
        iterator.close()
    records = batches * config.batch_size
    return {"records_per_sec": records / elapsed, "batches": batches,
            "num_workers": prefetch.resolve_workers(config), "num_threads": config.num_threads,
            "training_process_cpu_us_per_record": 1e6 * (cpu1[0] - cpu0[0]) / records,
            "worker_cpu_us_per_record": 1e6 * (cpu1[1] - cpu0[1]) / records}


def bench_naive(dataset, split: str, records: int, seed: int = 0) -> dict:
    """The baseline: one record at a time through ``ArrayRecordDataSource.__getitem__``, parsed with
    ``numpy.frombuffer`` (no augmentation, no batching, no shift), in a shuffled order."""
    source = grain.sources.ArrayRecordDataSource(dataset.files(split))
    order = np.random.default_rng(seed).permutation(len(source))
    order = np.resize(order, records)  # (records,) repeats the permutation if the split is smaller
    for i in order[:64].tolist():  # open the readers
        np.frombuffer(source[i], dtype="<u2")
    t0 = time.perf_counter()
    for i in order.tolist():
        np.frombuffer(source[i], dtype="<u2")
    return {"records_per_sec": records / (time.perf_counter() - t0), "records": records}


def bench_stages(config, dataset, batches: int) -> dict:
    """Read and augment time per record, each stage alone in this process (one core)."""
    read = record_reader.batch_reader(dataset, config.train_split, config.batch_size, seed=config.seed)
    t_read = t_aug = 0.0
    done = 0
    for j in range(batches):
        t0 = time.perf_counter()
        batch = read(j)  # the global shuffle's keys and one batched read
        t1 = time.perf_counter()
        augment.augment_batch(batch["tokens"], config.seed, batch["index"])
        t_aug += time.perf_counter() - t1
        t_read += t1 - t0
        done += len(batch["tokens"])
    t0 = time.perf_counter()
    for j in range(batches):
        example.make_example(batch["tokens"], dataset.pad_id)
    t_finish = time.perf_counter() - t0
    return {"read_us_per_record": 1e6 * t_read / done, "augment_us_per_record": 1e6 * t_aug / done,
            "shift_weights_us_per_record": 1e6 * t_finish / done}


def input_only(args, config, dataset) -> dict:
    """The input pipeline against the naive loop, in the same run, and its scaling with worker processes."""
    n_cores = usable_cores()
    counts = args.workers or list(range(1, n_cores + 1))
    records = args.input_batches * config.batch_size
    result = {"machine": machine(), "load_before": os.getloadavg(), "batch_size": config.batch_size,
              "augment": config.augment}
    result["naive"] = bench_naive(dataset, config.train_split, records)
    result["stages"] = bench_stages(config, dataset, min(args.input_batches, 100))
    result["default"] = bench_input(config, dataset, args.input_batches)
    result["threads"] = bench_input(dataclasses.replace(config, num_workers=0), dataset, args.input_batches)
    # Scaling of the processes themselves: one prefetch thread per worker (with more, one worker also
    # uses the other cores, as ArrayRecord and numpy release the GIL); then with the config's threads.
    result["workers"] = {
        n: bench_input(dataclasses.replace(config, num_workers=n, num_threads=1), dataset, args.input_batches)
        for n in counts
    }
    result["workers_config_threads"] = {
        n: bench_input(dataclasses.replace(config, num_workers=n), dataset, args.input_batches) for n in counts
    }
    result["naive_after"] = bench_naive(dataset, config.train_split, records, seed=1)  # the machine drifts
    result["load_after"] = os.getloadavg()
    naive = result["naive"]["records_per_sec"]
    print(f"machine: {result['machine']}; load average before {result['load_before'][0]:.2f}")
    print(f"naive one-at-a-time read + frombuffer: {naive:,.0f} records/s "
          f"(again after the pipeline: {result['naive_after']['records_per_sec']:,.0f})")
    st = result["stages"]
    print(f"stages alone (one core): read {st['read_us_per_record']:.1f} us/record, "
          f"augment {st['augment_us_per_record']:.1f} us/record, "
          f"shift and weights {st['shift_weights_us_per_record']:.1f} us/record")
    rows = [("default", result["default"]), ("threads (num_workers=0)", result["threads"])]
    rows += [(f"{n} worker process(es), 1 thread each", r) for n, r in result["workers"].items()]
    rows += [(f"{n} worker process(es), {config.num_threads} threads each", r)
             for n, r in result["workers_config_threads"].items()]
    for name, r in rows:
        print(f"train_iterator {name}: {r['records_per_sec']:,.0f} records/s = {r['records_per_sec'] / naive:.2f}x naive; "
              f"CPU per record: training process {r['training_process_cpu_us_per_record']:.1f} us, "
              f"workers {r['worker_cpu_us_per_record']:.1f} us")
    for key, threads in (("workers", 1), ("workers_config_threads", config.num_threads)):
        one = result[key].get(1, {}).get("records_per_sec")
        for n, r in result[key].items():
            if one and n > 1:
                print(f"  {n} workers / 1 worker ({threads} thread(s) each): {r['records_per_sec'] / one:.2f}x")
    print(f"load average after {result['load_after'][0]:.2f}")
    return result


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="tiny", help="preset name or YAML path (default tiny)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--steps", type=int, default=10, help="timed train steps (default 10)")
    parser.add_argument("--input_batches", type=int, default=200, help="batches pulled from the input pipeline")
    parser.add_argument("--peak_flops", type=float, default=None, help="peak FLOP/s of all local devices together")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--input_only", action="store_true",
                        help="measure only the input pipeline: against the naive loop, stages, 1..cores workers")
    parser.add_argument("--workers", type=int, nargs="*", default=None,
                        help="with --input_only, the worker counts to measure (default 1..cores)")
    args = parser.parse_args(argv)

    config = load_config(args.config, args.overrides)
    dataset = data.open_dataset(ensure_dataset(config.data_dir), config)
    if args.input_only:
        result = input_only(args, config, dataset)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"config": args.config, "overrides": args.overrides, **result}, f, indent=2)
        return 0
    n_params = model_lib.count_params(config.model)
    fpt = model_lib.flops_per_token(config.model, config.seq_len)

    trainer = bench_trainer(config, dataset, args.steps)
    peak, peak_source = peak_flops(config.model.dtype, args.peak_flops)
    inputs = bench_input(config, dataset, args.input_batches)
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "params": n_params,
        "batch_size": config.batch_size,
        "seq_len": config.seq_len,
        "dtype": config.model.dtype,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "devices": jax.local_device_count(),
        "host": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} CPUs visible",
        "flops_per_token": fpt,
        "trainer": trainer,
        "peak_flops": peak,
        "peak_source": peak_source,
        "mfu": fpt * trainer["tokens_per_sec"] / peak,
        "input": inputs,
        "input_over_trainer": inputs["records_per_sec"] / trainer["records_per_sec"],
    }
    print(
        f"{args.config}: {n_params:,} params, batch {config.batch_size} x {config.seq_len}, {config.model.dtype}, "
        f"{result['devices']} x {result['device']} ({result['backend']})\n"
        f"  trainer: {trainer['step_seconds'] * 1e3:.1f} ms/step, {trainer['tokens_per_sec']:,.0f} tokens/s, "
        f"{trainer['records_per_sec']:,.2f} records/s\n"
        f"  MFU: {result['mfu']:.1%} of {peak / 1e12:.3f} TFLOP/s ({peak_source}); {fpt / 1e6:.1f} MFLOP/token\n"
        f"  input pipeline alone: {inputs['records_per_sec']:,.0f} records/s = "
        f"{result['input_over_trainer']:,.0f}x what the trainer consumes "
        f"({'OK' if result['input_over_trainer'] >= 10 else 'TOO SLOW'}: must be >= 10x)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
    return 0 if result["input_over_trainer"] >= 10 else 1


if __name__ == "__main__":
    sys.exit(run())
