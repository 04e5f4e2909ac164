"""Benchmark: the model's RTT prediction on test measurements by descent against sampling, same run.

    python benchmarks/quantile_bench.py [--measurements 1000] [--samples 128] [--preset tiny]
                                        [--tokenizer v1|v2 | --data_dir D] [--workdir W] [--repeats 2]

Builds a ``--preset`` model of the dataset's scheme (random weights: the cost of a forward pass does not
depend on training; ``--workdir``: a trained checkpoint instead, which matters for the sampling side, whose
number of steps depends on what it draws), reads ``--measurements`` measurements of the test split of
``--data_dir`` (default: the bundled sample, pretokenized with ``--tokenizer``, default v1, into a temporary
folder) chosen as ``trainer.evaluate`` chooses them (seed 0), and times
what ``trainer.evaluate`` runs for the model's RTT prediction, on the same prompts:

* **descent**: :func:`trainer.eval.quantiles.model_distribution` at the evaluation's 7 levels plus the
  true RTT's row (8 rows per measurement, up to 128 measurements per batch: ``--max_rows 1024``), each
  record's tokens before its chosen measurements run once (``shared``), as ``trainer.evaluate`` does;
* **sampling**: :func:`trainer.eval.model_eval.sample_rtts` with ``--samples`` draws per measurement (8
  measurements per batch at 128 samples: ``--max_rows 1024``), what ``trainer.evaluate`` did before.

``--samples 0`` times the descent alone and ``--measurements 0`` takes every test measurement. Each is run
``--repeats`` times, alternating; the first round includes JAX's compilation (what one
``trainer.evaluate`` run pays), later rounds reuse it. Prints each round's wall times, the best of each and
their ratio (the target: descent at least 5x faster than 128 samples).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np
from common import load_average, machine  # benchmarks/common.py (the script's folder is on sys.path)
from flax import nnx

from beam_pipelines.dataset import read_manifest
from beam_pipelines.pretokenize import pipeline as pretokenize
from trainer import config as config_lib
from trainer import data
from trainer import model as model_lib
from trainer.eval import choice, columns, model_eval, probabilistic, quantiles, sampling


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measurements", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=128, help="samples per measurement (0: time the descent alone)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--data_dir", default=None, help="a pretokenized dataset (default: the bundled sample)")
    parser.add_argument("--tokenizer", default="v1", help="scheme the bundled sample is pretokenized with (default v1)")
    parser.add_argument("--workdir", default=None,
                        help="a training workdir: time its latest checkpoint instead of random weights (the "
                             "sampling side's cost depends on the weights: it runs until every row's RTT is "
                             "complete, and a scheme's long escape codes are drawn more often by random weights)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max_rows", type=int, default=1024)
    args = parser.parse_args(argv)

    work = None
    try:
        print(f"machine: {machine()}; JAX {jax.__version__} on {jax.default_backend()}; load average {load_average()}")
        ds = args.data_dir
        if ds is None:
            work = tempfile.mkdtemp(prefix="quantile_bench_")
            ds = os.path.join(work, "sample")
            assert pretokenize.run(["--output", ds, "--tokenizer", args.tokenizer]) == 0
        scheme = read_manifest(ds)["tokenizer"]
        config = config_lib.load_config(args.preset, [f"data_dir={ds}", "progress=false", f"tokenizer={scheme['name']}"])
        dataset = data.open_dataset(ds, config)
        records = columns.read_records(dataset, "test")
        cols = columns.decode_block(records, columns.Addresses(), scheme=columns.dataset_scheme(dataset))
        chosen = choice.choose(len(cols), args.measurements, 0)
        prompts = [model_eval.rtt_prompt(records[r], s, e, scheme)
                   for r, s, e in zip(cols.record[chosen], cols.start[chosen], cols.end[chosen])]
        true = cols.rtt[chosen]
        lengths = np.array([len(p) for p in prompts])
        print(f"{len(prompts)} test measurements of {ds}; prompt length mean {lengths.mean():.0f}, "
              f"max {lengths.max()} tokens")
        if args.workdir:
            loaded = sampling.load(args.workdir)
            if loaded.config.tokenizer != scheme["name"]:
                parser.error(f"--workdir {args.workdir} is a {loaded.config.tokenizer} model; the data is {scheme['name']}")
            sampler = sampling.Sampler.from_loaded(loaded)
            print(f"model: {args.workdir} step {loaded.step} ({loaded.config.model.num_layers} layers x width "
                  f"{loaded.config.model.width}), trained weights")
        else:
            model = model_lib.create(config.model, 0)
            graphdef, state = nnx.split(model)
            sampler = sampling.Sampler(graphdef, nnx.to_pure_dict(state), scheme["name"])
            print(f"model: preset {args.preset} ({config.model.num_layers} layers x width {config.model.width}), "
                  f"random weights")
        code = quantiles.rtt_code_for(dataset.manifest["tokenizer"])
        levels = probabilistic.LEVELS
        per_batch = max(1, args.max_rows // (len(levels) + 1))

        def descent():
            return quantiles.model_distribution(sampler, prompts, code, levels, truth=true, prompts_per_batch=per_batch,
                                                shared=(cols.record[chosen], cols.start[chosen]))

        def draw_samples():
            return model_eval.sample_rtts(sampler, prompts, args.samples, seed=0, max_rows=args.max_rows)

        # Wall time, and the process's CPU time (all threads): on a machine shared with other jobs the CPU
        # time is the steadier figure of the work done.
        best = {"descent": float("inf"), "sampling": float("inf")}
        cpu = {"descent": float("inf"), "sampling": float("inf")}
        for i in range(args.repeats):
            row = []
            for name, fn in (("descent", descent), ("sampling", draw_samples))[: 1 if args.samples == 0 else 2]:
                t, c = time.perf_counter(), time.process_time()
                fn()
                wall, used = time.perf_counter() - t, time.process_time() - c
                best[name], cpu[name] = min(best[name], wall), min(cpu[name], used)
                row.append(f"{name} {wall:.1f} s ({used:.1f} s CPU)")
            print(f"round {i + 1}{' (compiles)' if i == 0 else ''}: " + ", ".join(row) + f"; load average {load_average()}",
                  flush=True)
        if args.samples == 0:
            print(f"RESULT {len(prompts)} measurements: descent ({len(levels)} quantiles + the true RTT) "
                  f"{best['descent']:.1f} s ({cpu['descent']:.1f} s CPU), no sampling baseline; load average {load_average()}")
            return 0
        ratio, cpu_ratio = best["sampling"] / best["descent"], cpu["sampling"] / cpu["descent"]
        print(f"RESULT {len(prompts)} measurements: descent ({len(levels)} quantiles + the true RTT) "
              f"{best['descent']:.1f} s vs {args.samples} samples {best['sampling']:.1f} s: {ratio:.1f}x faster "
              f"(CPU time {cpu['descent']:.1f} s vs {cpu['sampling']:.1f} s: {cpu_ratio:.1f}x; target >= 5x: "
              f"{'met' if ratio >= 5 else 'NOT met'}); load average {load_average()}")
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
