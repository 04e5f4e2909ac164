"""Evaluate a trained model on a split: per-field likelihood, and RTT prediction against baselines.

    python -m trainer.evaluate --workdir W --data_dir D --split test --output R [--max_measurements N]

* Loads the latest checkpoint of ``W`` and opens ``D`` through its manifest, checked against the config
  the model was trained with (tokenizer, vocabulary, pad id, seq_len), as training does.
* **Per-field NLL**: the trainer's evaluation (loss per field kind) over the split, in bits per token
  and bits per field (a field's tokens summed, per measurement).
* **RTT prediction**: for ``N`` measurements of the split (a seeded choice, in file order), the model
  reads the record's tokens before the measurement, then ``MeasurementStart``, the measurement's six
  other blocks in canonical order (src, dst, size, errors, timestamp, msm_id) and ``RttStart``, and
  draws ``--samples`` RTTs (8 byte tokens each, grammar-constrained). The prediction is the median of
  the successful samples; the failure probability is the share of failed (< 0) samples; the 10-90%
  interval comes from the successful samples. The other blocks go in canonical order, not the
  measurement's on-disk order, because the on-disk order is a hash of the whole row, RTT included.
* **Baselines** fitted on the train split (``trainer.eval.baselines``): global median, per-destination
  median, per-(source, destination) median, the pair's last value, with fallbacks to coarser ones;
  and ``context_last``, the pair's latest RTT earlier in the same record (what the model also sees).
* Writes ``R/report.json``, ``R/report.md`` (model vs baselines), ``R/rtt_pred_vs_true.png`` and
  ``R/predictions.csv`` (one row per evaluated measurement).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np

from beam_pipelines.common import errors
from beam_pipelines.common.errors import InputError, UsageError
from beam_pipelines.common.files import atomic_path
from tokenizer import decode_measurement, fields, grammar, split_measurements
from tokenizer.vocab import BLOCK_RTT, MEASUREMENT_START, NUM_BLOCKS, RTT_START
from trainer.eval import baselines as bl

REPORT_JSON, REPORT_MD = "report.json", "report.md"
PLOT_PNG, PREDICTIONS_CSV = "rtt_pred_vs_true.png", "predictions.csv"
MODEL = "model"
CONTEXT_LAST = "context_last"



# ----------------------------------------------------------------------------------------------------------
# Reading a split


def read_records(dataset, split: str) -> np.ndarray:
    """All records of ``split`` in file order: (records, seq_len) uint16, read through the data contract."""
    from beam_pipelines.dataset import read_records as read_file

    parts = [read_file(path, dataset.seq_len) for path in dataset.files(split)]
    return np.concatenate(parts) if parts else np.zeros((0, dataset.seq_len), np.uint16)


@dataclasses.dataclass(frozen=True)
class Spans:
    """Where each measurement of a split lies: record index and [start, end) token span, (n,) each."""

    record: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.record)


def measurement_spans(records: np.ndarray) -> Spans:
    """The span of every measurement of every record, in file order."""
    rec, start, end = [], [], []
    for r, record in enumerate(records):
        offset = 0
        for m in split_measurements(record):
            rec.append(r)
            start.append(offset)
            offset += len(m)
            end.append(offset)
    as_int = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731
    return Spans(as_int(rec), as_int(start), as_int(end))


def choose(n_total: int, max_measurements: int, seed: int) -> np.ndarray:
    """Indices of the measurements to evaluate: all when ``max_measurements`` is 0 or covers them, else a
    seeded choice without replacement, sorted (file order), so the same arguments pick the same ones."""
    if max_measurements <= 0 or max_measurements >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=max_measurements, replace=False))


def observations(records: np.ndarray, spans: Spans) -> bl.Observations:
    """Decoded source, destination, RTT and timestamp of each measurement span."""
    src, dst, rtt, ts = [], [], [], []
    for r, s, e in zip(spans.record, spans.start, spans.end):
        row = decode_measurement(records[r, s:e])
        src.append(row["src_addr"])
        dst.append(row["dst_addr"])
        rtt.append(row["rtt"])
        ts.append(int(row["event_time"].timestamp()))
    return bl.Observations(
        np.array(src, dtype=object), np.array(dst, dtype=object), np.array(rtt, np.float64), np.array(ts, np.int64)
    )


# ----------------------------------------------------------------------------------------------------------
# The model's RTT prediction


def rtt_prompt(record: np.ndarray, start: int, end: int) -> np.ndarray:
    """The model input for predicting the RTT of the measurement at ``record[start:end]``.

    The record's tokens before the measurement, then ``MeasurementStart``, the measurement's blocks other
    than the RTT in canonical order, and ``RttStart``. Nothing of the measurement's RTT is in it: not its
    bytes, and not its block order (which the pretokenizer derives from the whole row, RTT included).
    """
    blocks = grammar.split_blocks(record[start:end])
    body = [np.array([MEASUREMENT_START])]
    body += [blocks[b] for b in range(NUM_BLOCKS) if b != BLOCK_RTT]
    body.append(np.array([RTT_START]))
    return np.concatenate([np.asarray(record[:start], dtype=np.int64), *body]).astype(np.int64)


def rtt_from_tokens(tokens: np.ndarray) -> np.ndarray:
    """(..., 8) RTT byte tokens -> (...) float64: the tokenizer's RTT decode, vectorized."""
    return fields.RTT.from_tokens(tokens)


def sample_rtts(sampler, prompts: list[np.ndarray], samples: int, *, seed: int, max_rows: int = 1024,
                progress: bool = False) -> np.ndarray:
    """(n, samples) sampled RTTs, one row per prompt (each from :func:`rtt_prompt`).

    Prompts are batched by length (``max_rows // samples`` prompts at a time); each prompt's draws come
    from ``(seed, its index)``, so the result does not depend on the batching.
    """
    from trainer.eval.sampling import sample

    per_batch = max(1, max_rows // max(samples, 1))
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out = np.full((len(prompts), samples), np.nan)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts), desc="rtt samples", file=sys.stderr, dynamic_ncols=True)
    for lo in range(0, len(order), per_batch):
        ids = order[lo : lo + per_batch]
        gens = sample(sampler, [prompts[i] for i in ids], samples, seed=seed, prompt_ids=ids.tolist())
        for i, tokens in zip(ids, gens):
            if tokens.shape[1] != fields.RTT.width:  # the grammar guarantees it
                raise RuntimeError(f"expected {fields.RTT.width} RTT tokens per sample, got {tokens.shape}")
            out[i] = rtt_from_tokens(tokens)
        if bar is not None:
            bar.update(len(ids))
    if bar is not None:
        bar.close()
    return out


# ----------------------------------------------------------------------------------------------------------
# Context baseline


def context_last_values(records: np.ndarray, spans: Spans, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each chosen measurement (index into ``spans``), the latest successful RTT of the same
    (src, dst) earlier in its record (NaN if none), and whether the pair's latest earlier measurement failed."""
    values, failed = np.full(len(chosen), np.nan), np.zeros(len(chosen))
    decoded: dict[int, list[dict]] = {}
    for j, i in enumerate(chosen):
        r = int(spans.record[i])
        if r not in decoded:
            decoded[r] = [decode_measurement(m) for m in split_measurements(records[r])]
        position = int(i - np.searchsorted(spans.record, r, side="left"))  # spans are in file order
        rows = decoded[r]
        me, latest = rows[position], True
        for row in reversed(rows[:position]):
            if row["src_addr"] != me["src_addr"] or row["dst_addr"] != me["dst_addr"]:
                continue
            if latest:
                failed[j], latest = float(row["rtt"] < 0), False
            if row["rtt"] >= 0:
                values[j] = row["rtt"]
                break
    return values, failed


# ----------------------------------------------------------------------------------------------------------
# Per-field NLL


def per_field_nll(loaded, dataset, split: str, *, batch_size: int, max_batches: int = 0) -> tuple[dict, dict]:
    """Bits per token and per field, per field kind, over ``split`` (the trainer's evaluation step).

    Returns ``(nll_per_field, nll_total)``. A field's bits are summed over its tokens and divided by
    the number of measurements (every measurement has one field of each kind; ``role`` counts all ten
    role tokens of a measurement, except a record's first MeasurementStart, which is never a target).
    """
    import jax

    from trainer import augment
    from trainer.data import eval_batches
    from trainer.train import make_eval_step

    eval_step = jax.jit(make_eval_step(loaded.graphdef))
    sums, measurements, records = None, 0, 0
    for batch in eval_batches(dataset, split, batch_size=batch_size, max_batches=max_batches):
        out = eval_step(loaded.params, batch)
        sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
        measurements += int((batch["inputs"] == MEASUREMENT_START).sum())
        records += int((batch["weights"].sum(axis=1) > 0).sum())
    if sums is None:
        return {}, {"measurements": 0, "records": 0}
    sums = jax.device_get(sums)
    ln2 = math.log(2)
    per_field = {}
    for i, name in enumerate(augment.KIND_NAMES):
        w = float(sums["kind_weight_sum"][i])
        if w > 0:
            per_field[name] = {
                "bits_per_token": float(sums["kind_loss_sum"][i]) / w / ln2,
                "bits_per_field": float(sums["kind_loss_sum"][i]) / max(measurements, 1) / ln2,
                "tokens": int(w),
            }
    total = {
        "bits_per_token": float(sums["loss_sum"]) / max(float(sums["weight_sum"]), 1.0) / ln2,
        "bits_per_measurement": float(sums["loss_sum"]) / max(measurements, 1) / ln2,
        "tokens": int(sums["weight_sum"]),
        "measurements": measurements,
        "records": records,
    }
    return per_field, total


# ----------------------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate(
    loaded,
    dataset,
    split: str,
    *,
    train_split: str = "train",
    max_measurements: int = 1000,
    samples: int = 128,
    seed: int = 0,
    nll_batches: int = 0,
    batch_size: int = 8,
    max_rows: int = 1024,
    progress: bool = False,
) -> tuple[dict, dict]:
    """Run the evaluation; returns ``(report, table)`` where ``table`` holds per-measurement columns."""
    from trainer.eval.sampling import Sampler

    timings = {}
    t0 = time.perf_counter()
    nll_per_field, nll_total = per_field_nll(loaded, dataset, split, batch_size=batch_size, max_batches=nll_batches)
    timings["nll_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    records = read_records(dataset, split)
    spans = measurement_spans(records)
    chosen = choose(len(spans), max_measurements, seed)
    picked = Spans(spans.record[chosen], spans.start[chosen], spans.end[chosen])
    evaluated = observations(records, picked)
    train_records = read_records(dataset, train_split)
    train_obs = observations(train_records, measurement_spans(train_records))
    fitted = bl.fit(train_obs)
    predictions = {name: bl.predict(fitted, name, evaluated.src, evaluated.dst) for name in bl.NAMES}
    ctx_values, ctx_failed = context_last_values(records, spans, chosen)
    predictions[CONTEXT_LAST] = bl.context_last(ctx_values, ctx_failed, predictions["dst_median"])
    timings["baselines_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    prompts = [rtt_prompt(records[r], s, e) for r, s, e in zip(picked.record, picked.start, picked.end)]
    rtt_samples = sample_rtts(Sampler.from_loaded(loaded), prompts, samples, seed=seed, max_rows=max_rows,
                              progress=progress)
    model_pred = bl.summarize_samples(rtt_samples)
    timings["rtt_sampling_s"] = time.perf_counter() - t0

    invalid = ~np.isfinite(rtt_samples)
    report = {
        "rtt": {
            MODEL: {
                **bl.metrics(evaluated.rtt, model_pred),
                "invalid_sample_share": float(invalid.mean()) if invalid.size else 0.0,
                # model minus baseline, paired over the same measurements, with a bootstrap interval
                "vs": {name: bl.compare(evaluated.rtt, model_pred, p, seed=seed) for name, p in predictions.items()},
            },
            "baselines": {name: bl.metrics(evaluated.rtt, p) for name, p in predictions.items()},
        },
        "nll_per_field": nll_per_field,
        "nll": nll_total,
        "meta": {
            "checkpoint_step": loaded.step,
            "model": dataclasses.asdict(loaded.config.model),
            "train_steps": loaded.config.steps,
            "batch_size": loaded.config.batch_size,
            "data_dir": os.path.abspath(dataset.root),
            "dataset_fingerprint": dataset.fingerprint,
            "trained_on_fingerprint": loaded.fingerprint,
            "split": split,
            "train_split": train_split,
            "split_measurements": int(len(spans)),
            "evaluated_measurements": int(len(chosen)),
            "samples_per_measurement": samples,
            "seed": seed,
            "timings": timings,
        },
    }
    table = {
        "record": picked.record,
        "start": picked.start,
        "src_addr": evaluated.src,
        "dst_addr": evaluated.dst,
        "true_rtt": evaluated.rtt,
        "model": model_pred,
        **{name: p for name, p in predictions.items()},
    }
    return report, table


# ----------------------------------------------------------------------------------------------------------
# Writing the report


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict) -> str:
    """``report.md``: the RTT table (model vs baselines) and the per-field NLL table."""
    meta = report["meta"]
    m = meta["model"]
    lines = [
        "# ping-llm evaluation",
        "",
        f"Checkpoint step {meta['checkpoint_step']} (model {m['num_layers']} layers x width {m['width']}, "
        f"{m['num_heads']} heads, MLP {m['mlp_dim']}; trained {meta['train_steps']} steps at batch "
        f"{meta['batch_size']}), split `{meta['split']}` of `{meta['data_dir']}` "
        f"(fingerprint `{meta['dataset_fingerprint'][:12]}`).",
        "",
        f"## RTT prediction ({meta['evaluated_measurements']} of {meta['split_measurements']} measurements, "
        f"{meta['samples_per_measurement']} samples each, seed {meta['seed']})",
        "",
        "| predictor | median abs error (ms) | model minus this, 95% CI (ms) | mean abs error (ms) "
        "| median abs log ratio | failure accuracy | calibration 10-90% | scored | fallback to dst / global |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(MODEL, report["rtt"][MODEL])] + list(report["rtt"]["baselines"].items())
    for name, r in rows:
        fb = r.get("fallback", {})
        fallback = "-" if name == MODEL else f"{fb.get('dst_median', 0):.0%} / {fb.get('global_median', 0):.0%}"
        vs = report["rtt"][MODEL].get("vs", {}).get(name)
        paired = "-"
        if vs and vs["ci95"] is not None:
            paired = f"{vs['median_abs_error_diff_ms']:+.2f} [{vs['ci95'][0]:+.2f}, {vs['ci95'][1]:+.2f}]"
        lines.append(
            f"| {'**model**' if name == MODEL else name} | {_fmt(r['median_abs_error_ms'], 2)} | {paired} "
            f"| {_fmt(r['mean_abs_error_ms'], 2)} | {_fmt(r['median_abs_log_ratio'])} "
            f"| {_fmt(r['failure_accuracy'])} | {_fmt(r['calibration_10_90'])} "
            f"| {r['scored']} | {fallback} |"
        )
    model = report["rtt"][MODEL]
    lines += [
        "",
        "Errors are over measurements whose true RTT is > 0 and that got an RTT prediction (`scored`); "
        f"the model gave no RTT (all samples failed) for {model['unscored_successes']} successful measurements "
        f"and {model['invalid_sample_share']:.2%} of its samples were NaN or infinite. "
        f"{model['true_failures']} evaluated measurements failed. Baselines are fitted on the "
        f"`{meta['train_split']}` split; `context_last` is the pair's latest RTT earlier in the same record "
        "(what the model also sees), falling back to `dst_median`. The second column is the model's median "
        "absolute error minus the predictor's on the measurements both score (negative: the model is better), "
        "with a 95% bootstrap interval.",
        "",
        "## Per-field negative log-likelihood",
        "",
        "| field | bits per token | bits per field | tokens |",
        "|---|---|---|---|",
    ]
    for name, r in report["nll_per_field"].items():
        lines.append(f"| {name} | {r['bits_per_token']:.3f} | {r['bits_per_field']:.2f} | {r['tokens']:,} |")
    nll = report["nll"]
    if nll.get("measurements"):
        lines += [
            f"| **all** | {nll['bits_per_token']:.3f} | {nll['bits_per_measurement']:.2f} per measurement "
            f"| {nll['tokens']:,} |",
        ]
    lines += ["", f"![predicted vs true RTT]({PLOT_PNG})", ""]
    return "\n".join(lines)


def write_predictions(table: dict, path: str) -> None:
    """One CSV row per evaluated measurement: true RTT and every predictor's value and interval."""
    names = [k for k, v in table.items() if isinstance(v, bl.Prediction)]
    header = ["record", "start", "src_addr", "dst_addr", "true_rtt"]
    for name in names:
        header += [f"{name}_rtt", f"{name}_p10", f"{name}_p90", f"{name}_fail_prob", f"{name}_level"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(len(table["true_rtt"])):
            row = [int(table["record"][i]), int(table["start"][i]), table["src_addr"][i], table["dst_addr"][i],
                   repr(float(table["true_rtt"][i]))]
            for name in names:
                p = table[name]
                row += [_csv(p.value[i]), _csv(p.low[i]), _csv(p.high[i]), _csv(p.fail_prob[i])]
                row.append(bl.LEVELS[int(p.level[i])])
            writer.writerow(row)


def _csv(x: float) -> str:
    return "" if not math.isfinite(float(x)) else repr(float(x))


def plot(table: dict, path: str, baseline: str = "dst_median") -> None:
    """Predicted vs true RTT (log-log): the model with its 10-90% interval, and one baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true = np.asarray(table["true_rtt"])
    seen = true[true > 0]
    # Axes span the true RTTs with a decade to spare; wilder predictions (an undertrained model samples
    # raw float64 bytes) are drawn at the edge rather than stretching the axes to 1e300.
    lim = (seen.min() / 10, seen.max() * 10) if len(seen) else (0.1, 1000.0)
    clip = lambda a: np.clip(a, *lim)  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    for ax, name in zip(axes, (MODEL, baseline)):
        p = table[name]
        ok = (true > 0) & np.isfinite(p.value) & (p.value > 0)
        value = clip(p.value[ok])
        if name == MODEL:
            lo = np.clip(value - clip(np.nan_to_num(p.low[ok], nan=lim[0])), 0, None)
            hi = np.clip(clip(np.nan_to_num(p.high[ok], nan=lim[1])) - value, 0, None)
            ax.errorbar(true[ok], value, yerr=[lo, hi], fmt="o", ms=3, alpha=0.5, elinewidth=0.5,
                        label="median of samples, 10-90% bar")
        else:
            ax.plot(true[ok], value, "o", ms=3, alpha=0.5, label=name)
        ax.plot(lim, lim, "k--", lw=0.8, label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_xlabel("true RTT (ms)")
        ax.set_title(name)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("predicted RTT (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, table: dict, output: str) -> list[str]:
    """Write report.json, report.md, the plot and predictions.csv under ``output``; returns their paths."""
    os.makedirs(output, exist_ok=True)
    paths = [os.path.join(output, name) for name in (REPORT_JSON, REPORT_MD, PLOT_PNG, PREDICTIONS_CSV)]
    with atomic_path(paths[0]) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    with open(paths[1], "w") as f:
        f.write(render_markdown(report))
    plot(table, paths[2])
    write_predictions(table, paths[3])
    return paths


# ----------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="training workdir (its latest checkpoint is evaluated)")
    p.add_argument("--data_dir", required=True, help="pretokenized dataset (directory holding manifest.json)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--train_split", default="train", help="split the baselines are fitted on (default train)")
    p.add_argument("--output", required=True, help="report directory")
    p.add_argument("--max_measurements", type=int, default=1000, help="measurements for RTT prediction (0: all)")
    p.add_argument("--samples", type=int, default=128, help="RTT samples per measurement (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of measurements and the sampling")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--nll_batches", type=int, default=0, help="batches for the per-field NLL (0: whole split)")
    p.add_argument("--batch_size", type=int, default=8, help="records per NLL batch (default 8)")
    p.add_argument("--max_rows", type=int, default=1024, help="sampled rows per decode batch (default 1024)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return p


def run(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code: 0 done, 2 bad arguments, a missing checkpoint or dataset
    (``beam_pipelines.common.errors``; a failure during the evaluation raises, exit 1)."""
    args = _parser().parse_args(argv)
    from trainer import data
    from trainer.eval import sampling

    try:
        for name in ("max_measurements", "nll_batches"):
            if getattr(args, name) < 0:
                raise UsageError(f"--{name} must be >= 0")
        for name in ("samples", "batch_size", "max_rows"):
            if getattr(args, name) <= 0:
                raise UsageError(f"--{name} must be positive")
        loaded = sampling.load(args.workdir, args.step)
        dataset = data.open_dataset(args.data_dir, loaded.config)
        for split in (args.split, args.train_split):
            dataset.num_records(split)  # raises DatasetError naming the splits there are
    except (UsageError, InputError) as err:  # CheckpointError and DatasetError are InputErrors
        return errors.report(err)
    if loaded.fingerprint and loaded.fingerprint != dataset.fingerprint:
        print(f"warning: the model was trained on dataset {loaded.fingerprint[:12]}, evaluating on "
              f"{dataset.fingerprint[:12]}", file=sys.stderr)
    report, table = evaluate(
        loaded, dataset, args.split, train_split=args.train_split, max_measurements=args.max_measurements,
        samples=args.samples, seed=args.seed, nll_batches=args.nll_batches, batch_size=args.batch_size,
        max_rows=args.max_rows, progress=args.progress,
    )
    report["meta"]["workdir"] = os.path.abspath(args.workdir)  # for the record only
    paths = write_report(report, table, args.output)
    print(render_markdown(report).split("## Per-field")[0].strip())
    print(f"wrote {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
