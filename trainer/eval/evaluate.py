"""Evaluate a trained model on a split: per-field likelihood, and RTT prediction against baselines.

    python -m trainer.evaluate --workdir W --data_dir D --split test --output R [--max_measurements N]

* Loads the latest checkpoint of ``W`` and opens ``D`` through its manifest, checked against the config
  the model was trained with (tokenizer, vocabulary, pad id, seq_len), as training does.
* **Per-field NLL**: the trainer's evaluation (loss per field kind) over the split, in bits per token
  and bits per field (a field's tokens summed, per measurement).
* **RTT prediction**: for ``N`` measurements of the split (a seeded choice, in file order), the model
  reads the record's tokens before the measurement, then ``MeasurementStart``, the measurement's six
  other blocks in canonical order (src, dst, size, errors, timestamp, msm_id) and ``RttStart``, and its
  RTT distribution is read exactly by descent (``trainer.eval.quantiles``): the quantiles of the RTT given
  success at ``trainer.eval.probabilistic.LEVELS``, the failure probability, and the true RTT's likelihood
  and PIT. The prediction is the descent median, the 10-90% interval its 0.1 and 0.9 quantiles. With
  ``--samples S`` the model also draws S RTTs per measurement, scored beside (``model_sampled``). The other
  blocks go in canonical order, not the measurement's on-disk order, because the on-disk order is a hash of
  the whole row, RTT included.
* **The distribution** (``trainer.eval.probabilistic``): coverage of the central 50/80/90% intervals,
  pinball loss at 0.1/0.5/0.9, the model's NLL of the true outcome and its PIT reliability, beside
  probabilistic baselines from the train split (destination and pair empirical quantiles, the context
  baselines' residual quantiles), with paired bootstrap intervals; ``R/reliability.png``.
* **Baselines** fitted on the train split (``trainer.eval.baselines``): global median, per-destination
  median, per-(source, destination) median, the pair's last value, with fallbacks to coarser ones;
  and ``context_last``, the pair's latest RTT earlier in the same record (what the model also sees).
* Writes ``R/report.json``, ``R/report.md`` (model vs baselines), ``R/report.html`` (the same, figures
  embedded), ``R/rtt_pred_vs_true.png``, ``R/reliability.png`` (with a model) and ``R/predictions.csv``
  (one row per evaluated measurement).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import math
import os
import sys
import time

import numpy as np

from beam_pipelines.common import errors
from beam_pipelines.common.cli import StrictArgumentParser, parse_options
from beam_pipelines.common.errors import InputError, UsageError
from beam_pipelines.dataset import DatasetError
from tokenizer import get_scheme
from trainer.eval import baselines as bl
from trainer.eval import choice, columns, fitting, spill
from trainer.eval import coordinates as co
from trainer.eval.report import (
    MODEL,
    MODEL_SAMPLED,
    render_markdown,
    write_report,
)

CONTEXT_LAST = "context_last"
# Every baseline, in the report's order: train medians, the field's coordinate predictors, then the ones
# that read the pair's earlier measurements in the record (what the model also sees).
ALL_BASELINES = (*bl.NAMES, co.MF, co.VIVALDI, *bl.CONTEXT_NAMES)



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
    """The span of every measurement of every record, in file order (vectorized, :mod:`trainer.eval.columns`)."""
    cols = columns.decode_block(records, columns.Addresses())
    return Spans(cols.record, cols.start.astype(np.int64), cols.end.astype(np.int64))


# ----------------------------------------------------------------------------------------------------------
# The model's RTT prediction


def rtt_prompt(record: np.ndarray, start: int, end: int, tokenizer: str | dict = "v1") -> np.ndarray:
    """The model input for predicting the RTT of the measurement at ``record[start:end]``: the scheme's
    ``rtt_prompt_at``. The record's tokens before the measurement, then the measurement's other fields in
    evaluation's order (v1: ``MeasurementStart``, the six other blocks in canonical order and ``RttStart``;
    v2: its head, destination, size and error count). Nothing of the measurement's RTT is in it: not its
    value, and not its v1 block order (which the pretokenizer derives from the whole row, RTT included).
    """
    return get_scheme(tokenizer).rtt_prompt_at(record, start, end)


def rtt_from_tokens(tokens: np.ndarray, tokenizer: str | dict = "v1") -> np.ndarray:
    """(..., width) RTT value tokens -> (...) float64: the scheme's RTT decode, vectorized."""
    return get_scheme(tokenizer).rtt.decode(tokens)


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
    scheme = sampler.scheme
    code = scheme.rtt
    for lo in range(0, len(order), per_batch):
        ids = order[lo : lo + per_batch]
        gens = sample(sampler, [prompts[i] for i in ids], samples, seed=seed, prompt_ids=ids.tolist())
        for i, tokens in zip(ids, gens):
            if tokens.shape[1] == code.width and np.isin(tokens[:, 0], code.value_tokens(0)).all():
                out[i] = code.decode(tokens)  # every sample spelled as value tokens (always so in v1)
            else:  # a failure or an escape among them (v2): decode each sample's measurement
                out[i] = [scheme.decode_sample(prompts[i], row)["rtt"] for row in tokens]
        if bar is not None:
            bar.update(len(ids))
    if bar is not None:
        bar.close()
    return out


# ----------------------------------------------------------------------------------------------------------
# Baselines over a whole split, block by block


Fitted = fitting.Fitted


def fit_baselines(dataset, train_split: str, addresses: columns.Addresses, *, mf_rank: int = co.MF_RANK,
                  mf_reg: float = co.MF_REG, vivaldi_dims: int = co.VIVALDI_DIMS, seed: int = 0,
                  bucket_rows: int = fitting.BUCKET_ROWS, block_records: int = 4096,
                  timings: dict | None = None) -> Fitted:
    """Fit every train baseline on ``train_split``, read block by block into buckets of ``bucket_rows``
    measurements (:mod:`trainer.eval.fitting`: memory grows with the distinct pairs, not the measurements)."""
    return fitting.fit_split(dataset, train_split, addresses, mf_rank=mf_rank, mf_reg=mf_reg,
                             vivaldi_dims=vivaldi_dims, seed=seed, bucket_rows=bucket_rows,
                             block_records=block_records, timings=timings)


def block_predictions(fitted: Fitted, cols: columns.Columns) -> dict[str, bl.Prediction]:
    """Every baseline's predictions for every measurement of a block of whole records (``cols``)."""
    return _submit_block(None, fitted, cols)()


def _submit_block(pool, fitted: Fitted, cols: columns.Columns):
    """Start a block's predictions as two tasks on ``pool`` (None: here, in turn): Vivaldi's fold-in, the
    longest part, and everything else; returns a function that waits for both and gives
    :func:`block_predictions`'s dict. The tasks share no mutable state, so the answers do not depend on
    how they are scheduled."""
    tables = fitting.block_tables(fitted, cols.src, cols.dst)  # with this block's pairs from the pair store
    dst = bl.predict(tables, "dst_median", cols.src, cols.dst)

    def vivaldi():
        return co.predict_vivaldi(fitted.vivaldi, cols.record, cols.src, cols.dst, cols.rtt, dst)

    def rest():
        out = {name: dst if name == "dst_median" else bl.predict(tables, name, cols.src, cols.dst)
               for name in bl.NAMES}
        out[co.MF] = co.predict_factorization(fitted.factorization, cols.record, cols.src, cols.dst, cols.rtt, dst)
        out.update(bl.context_predictions(bl.pair_context(cols.record, cols.src, cols.dst, cols.rtt), dst))
        return out

    if pool is None:
        done_v, done_r = vivaldi(), rest()
        futures = None
    else:
        futures = pool.submit(vivaldi), pool.submit(rest)

    def result() -> dict[str, bl.Prediction]:
        v, r = (done_v, done_r) if futures is None else (futures[0].result(), futures[1].result())
        return {name: v if name == co.VIVALDI else r[name] for name in ALL_BASELINES}

    return result


@dataclasses.dataclass(frozen=True)
class Scored:
    """The chosen measurements of a split, their baselines' predictions, and (when asked) their prompts."""

    cols: columns.Columns
    predictions: dict
    prompts: list
    split_measurements: int
    unseen_source_share: float


SPILL_ROWS = 1_000_000  # chosen measurements above which score_split keeps the predictions on disk


def score_split(fitted: Fitted, dataset, split: str, addresses: columns.Addresses, *, max_measurements: int,
                seed: int, prompts: bool = False, block_records: int = 1024, spill_rows: int | None = None,
                choose_by: str = "position") -> Scored:
    """Decode ``split`` block by block and keep the baselines' predictions for the chosen measurements
    (:func:`trainer.eval.choice.chosen` over the manifest's measurement count, ``choose_by`` position or
    row); memory: one block plus the chosen rows. Blocks
    of 1,024 records (not the decoder's 4,096) keep the fold-ins' temporaries (per earlier measurement of
    every measurement's source) small. With more than ``spill_rows`` (default :data:`SPILL_ROWS`) chosen
    measurements the predictions go to disk as they come (:class:`trainer.eval.spill.SpilledPredictions`,
    440 bytes a measurement) and ``predictions`` reads them back a predictor at a time; the measurements'
    columns stay in memory (40 bytes each)."""
    total = int(dataset.manifest["splits"][split]["measurements"])
    chosen = choice.chosen(dataset, split, total, max_measurements, seed, choose_by)
    parts, preds, prompt_list, offset = [], [], [], 0
    spilled = spill.SpilledPredictions() if len(chosen) > (SPILL_ROWS if spill_rows is None else spill_rows) else None
    scheme = get_scheme(dataset.manifest["tokenizer"])  # the prompts are the dataset's scheme's
    keep = preds.append if spilled is None else spilled.append
    pending = collections.deque()  # (chosen rows of a block, its predictions' result function)
    # Two workers take the blocks' tasks as they come (a block's Vivaldi fold-in on one core while the
    # other finishes the previous block's other predictors), the decode runs here; at most two blocks in
    # flight. numpy releases the GIL in the heavy parts; results are collected in block order.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for records, cols in columns.iter_split(dataset, split, addresses, block_records=block_records):
            lo, hi = np.searchsorted(chosen, [offset, offset + len(cols)])
            local = chosen[lo:hi] - offset
            if len(local):
                pending.append((local, _submit_block(pool, fitted, cols)))
                parts.append(cols.take(local))
                if prompts:
                    first = int(cols.record[0]) if len(cols) else 0
                    prompt_list += [scheme.rtt_prompt_at(records[r - first], s, e) for r, s, e in
                                    zip(cols.record[local], cols.start[local], cols.end[local])]
            while len(pending) > 2:
                rows, result = pending.popleft()
                keep({name: p.take(rows) for name, p in result().items()})
            offset += len(cols)
        while pending:
            rows, result = pending.popleft()
            keep({name: p.take(rows) for name, p in result().items()})
    if offset != total:
        raise DatasetError(f"{dataset.root}: split {split!r} holds {offset} measurements but the manifest says {total}")
    picked = columns.Columns.concat(parts)
    names = list(preds[0]) if preds else list(ALL_BASELINES)
    predictions = spilled if spilled is not None else {
        name: bl.Prediction.concat([p[name] for p in preds]) for name in names}
    unseen = float(np.mean(co._find(fitted.factorization.src_keys, picked.src) < 0)) if len(picked) else 0.0
    return Scored(picked, predictions, prompt_list, total, unseen)


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
    scheme = get_scheme(dataset.manifest["tokenizer"])
    sums, measurements, records = None, 0, 0
    for batch in eval_batches(dataset, split, batch_size=batch_size, max_batches=max_batches):
        out = eval_step(loaded.params, batch)
        sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
        measurements += int(scheme.survey(np.asarray(batch["inputs"])).measurements.sum())  # measurements begun
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


def _baselines_part(dataset, split: str, train_split: str, *, max_measurements: int, seed: int, prompts: bool,
                    mf_rank: int, mf_reg: float, vivaldi_dims: int, timings: dict, choose_by: str = "position") -> tuple[Scored, Fitted, columns.Addresses]:
    addresses = columns.Addresses()
    t0 = time.perf_counter()
    fitted = fit_baselines(dataset, train_split, addresses, mf_rank=mf_rank, mf_reg=mf_reg,
                           vivaldi_dims=vivaldi_dims, seed=seed, timings=timings)
    timings["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = score_split(fitted, dataset, split, addresses, max_measurements=max_measurements, seed=seed,
                         prompts=prompts, choose_by=choose_by)
    timings["score_s"] = time.perf_counter() - t0
    return scored, fitted, addresses


def _baselines_meta(dataset, split, train_split, scored: Scored, fitted: Fitted, *, mf_rank, mf_reg, vivaldi_dims,
                    seed, timings, choose_by: str = "position") -> dict:
    return {
        "data_dir": os.path.abspath(dataset.root),
        "dataset_fingerprint": dataset.fingerprint,
        "split": split,
        "train_split": train_split,
        "split_measurements": scored.split_measurements,
        "evaluated_measurements": len(scored.cols),
        "choose_by": choose_by,
        "train_measurements": fitted.train_measurements,
        "train_sources": fitted.train_sources,
        "train_buckets": fitted.buckets,
        "train_pairs": fitted.train_pairs,
        "model_pairs": fitted.model_pairs,
        "unseen_source_share": scored.unseen_source_share,
        "matrix_factorization": {"rank": mf_rank, "reg": mf_reg, "method": "ALS", "iters": co.MF_ITERS},
        "vivaldi": {"dims": vivaldi_dims, "height": True, "rounds": co.VIVALDI_ROUNDS, "batch": co.VIVALDI_BATCH,
                    "fold_rounds": co.FOLD_ROUNDS},
        "pair_ewma_alpha": bl.EWMA_ALPHA,
        "seed": seed,
        "timings": timings,
    }


def evaluate_baselines(
    dataset,
    split: str,
    *,
    train_split: str = "train",
    max_measurements: int = 0,
    seed: int = 0,
    mf_rank: int = co.MF_RANK,
    mf_reg: float = co.MF_REG,
    vivaldi_dims: int = co.VIVALDI_DIMS,
    addresses_text: bool = True,
    choose_by: str = "position",
) -> tuple[dict, dict]:
    """The baselines alone (no model): ``(report, table)`` over ``max_measurements`` of ``split`` (0: all)."""
    timings: dict = {}
    scored, fitted, addresses = _baselines_part(
        dataset, split, train_split, max_measurements=max_measurements, seed=seed, prompts=False,
        mf_rank=mf_rank, mf_reg=mf_reg, vivaldi_dims=vivaldi_dims, timings=timings, choose_by=choose_by)
    t0 = time.perf_counter()
    true = scored.cols.rtt
    report = {
        "rtt": {"baselines": {name: bl.metrics(true, p) for name, p in scored.predictions.items()}},
        "meta": _baselines_meta(dataset, split, train_split, scored, fitted, mf_rank=mf_rank, mf_reg=mf_reg,
                                vivaldi_dims=vivaldi_dims, seed=seed, timings=timings, choose_by=choose_by),
    }
    timings["metrics_s"] = time.perf_counter() - t0
    return report, _table(scored, addresses, addresses_text)


def _table(scored: Scored, addresses: columns.Addresses, text: bool = True) -> dict:
    cols = scored.cols
    table = {
        "record": cols.record,
        "start": cols.start,
        "src_addr": addresses.text(cols.src) if text else cols.src,
        "dst_addr": addresses.text(cols.dst) if text else cols.dst,
        "event_time": cols.timestamp,
        "true_rtt": cols.rtt,
    }
    if isinstance(scored.predictions, dict):
        return {**table, **scored.predictions}
    return spill.Table(table, scored.predictions)  # spilled: read a predictor at a time, never all at once


def evaluate(
    loaded,
    dataset,
    split: str,
    *,
    train_split: str = "train",
    max_measurements: int = 1000,
    samples: int = 0,
    seed: int = 0,
    nll_batches: int = 0,
    batch_size: int = 8,
    max_rows: int = 1024,
    progress: bool = False,
    mf_rank: int = co.MF_RANK,
    mf_reg: float = co.MF_REG,
    vivaldi_dims: int = co.VIVALDI_DIMS,
    choose_by: str = "position",
) -> tuple[dict, dict]:
    """Run the evaluation; returns ``(report, table)`` where ``table`` holds per-measurement columns.

    The model's RTT prediction is read by descent (:mod:`trainer.eval.quantiles`, ``max_rows`` rows per
    batch: a row per quantile level and one for the true RTT, per measurement); ``samples`` > 0 also draws
    that many RTTs per measurement and reports their figures beside (``model_sampled``)."""
    from trainer.eval import probabilistic as pr
    from trainer.eval import quantiles as qt
    from trainer.eval.sampling import Sampler

    timings = {}
    t0 = time.perf_counter()
    nll_per_field, nll_total = per_field_nll(loaded, dataset, split, batch_size=batch_size, max_batches=nll_batches)
    timings["nll_s"] = time.perf_counter() - t0

    scored, fitted, addresses = _baselines_part(
        dataset, split, train_split, max_measurements=max_measurements, seed=seed, prompts=True,
        mf_rank=mf_rank, mf_reg=mf_reg, vivaldi_dims=vivaldi_dims, timings=timings, choose_by=choose_by)
    predictions = scored.predictions
    true = scored.cols.rtt

    sampler = Sampler.from_loaded(loaded)
    t0 = time.perf_counter()
    code = qt.rtt_code_for(loaded.config.tokenizer)
    # Measurements of one record share the record's tokens before them: each record's prefix runs once.
    dist = qt.model_distribution(sampler, scored.prompts, code, pr.LEVELS, truth=true,
                                 prompts_per_batch=max(1, max_rows // (len(pr.LEVELS) + 1)),
                                 shared=(scored.cols.record, scored.cols.start), progress=progress)
    n = len(true)
    model_pred = bl.Prediction(dist.quantile(0.5), dist.quantile(0.1), dist.quantile(0.9),
                               dist.failure_probability, np.zeros(n, np.int64))
    model_forecast = pr.QuantileForecast(pr.LEVELS, dist.values, None, dist.log_likelihood, dist.pit)
    timings["rtt_descent_s"] = time.perf_counter() - t0
    sampled_pred = sampled_forecast = None
    if samples:
        t0 = time.perf_counter()
        rtt_samples = sample_rtts(sampler, scored.prompts, samples, seed=seed, max_rows=max_rows, progress=progress)
        sampled_pred = bl.summarize_samples(rtt_samples)
        sampled_forecast = pr.QuantileForecast.from_samples(rtt_samples)
        timings["rtt_sampling_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    forecasts = pr.train_forecasts(dataset, train_split, addresses, scored.cols, predictions)
    timings["probabilistic_baselines_s"] = time.perf_counter() - t0

    meta = _baselines_meta(dataset, split, train_split, scored, fitted, mf_rank=mf_rank, mf_reg=mf_reg,
                           vivaldi_dims=vivaldi_dims, seed=seed, timings=timings, choose_by=choose_by)
    report = {
        "rtt": {
            MODEL: {
                **bl.metrics(true, model_pred),
                # model minus baseline, paired over the same measurements, with a bootstrap interval
                "vs": {name: bl.compare(true, model_pred, p, seed=seed) for name, p in predictions.items()},
            },
            "baselines": {name: bl.metrics(true, p) for name, p in predictions.items()},
            "distribution": pr.report_section(true, model_forecast, forecasts, sampled=sampled_forecast, seed=seed),
        },
        "nll_per_field": nll_per_field,
        "nll": nll_total,
        "meta": {
            "checkpoint_step": loaded.step,
            "model": dataclasses.asdict(loaded.config.model),
            "train_steps": loaded.config.steps,
            "batch_size": loaded.config.batch_size,
            "trained_on_fingerprint": loaded.fingerprint,
            "samples_per_measurement": samples,
            "rtt_prediction": "descent",
            "quantile_levels": list(pr.LEVELS),
            **meta,
        },
    }
    if sampled_pred is not None:
        invalid = ~np.isfinite(rtt_samples)
        report["rtt"][MODEL_SAMPLED] = {
            **bl.metrics(true, sampled_pred),
            "invalid_sample_share": float(invalid.mean()) if invalid.size else 0.0,
            "vs_descent": bl.compare(true, sampled_pred, model_pred, seed=seed),
        }
    table = _table(scored, addresses)
    table[MODEL] = model_pred
    if sampled_pred is not None:
        table[MODEL_SAMPLED] = sampled_pred
    return report, table


# ----------------------------------------------------------------------------------------------------------
# CLI


MODEL_ONLY = ("workdir", "step", "samples", "nll_batches", "batch_size", "max_rows")  # refused with --baselines_only
_MODEL_DEFAULTS = {"nll_batches": 0, "batch_size": 8, "max_rows": 1024}


def _parser() -> StrictArgumentParser:
    p = StrictArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default=None, help="training workdir (its latest checkpoint is evaluated); "
                   "required unless --baselines_only")
    p.add_argument("--baselines_only", action="store_true",
                   help="score the baselines alone, without a model (no --workdir)")
    p.add_argument("--data_dir", required=True, help="pretokenized dataset (directory holding manifest.json)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--data_version", type=int, default=None,
                   help="dataset version read (default: the checkpoint's with --workdir, else the latest)")
    p.add_argument("--train_split", default="train", help="split the baselines are fitted on (default train)")
    p.add_argument("--output", required=True, help="report directory")
    p.add_argument("--max_measurements", type=int, default=None,
                   help="measurements evaluated (0: all; default 1000 with a model, 0 with --baselines_only)")
    p.add_argument("--samples", type=int, default=None,
                   help="also draw this many RTT samples per measurement and report their figures beside the "
                        "descent's (default: none)")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of measurements and the sampling")
    p.add_argument("--choose_by", choices=choice.CHOOSE_BY, default="position",
                   help="how --max_measurements picks: by position in the split's files (default), or by a hash "
                        "of each row's source, destination and time, so that datasets of the same rows in "
                        "another scheme or packing score the same measurements (pair them with "
                        "python -m trainer.eval.compare)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--nll_batches", type=int, default=None, help="batches for the per-field NLL (0: whole split)")
    p.add_argument("--batch_size", type=int, default=None, help="records per NLL batch (default 8)")
    p.add_argument("--max_rows", type=int, default=None, help="rows per decode batch: the descent takes 8 per measurement, sampling --samples (default 1024)")
    p.add_argument("--mf_rank", type=int, default=co.MF_RANK, help=f"matrix factorisation rank (default {co.MF_RANK})")
    p.add_argument("--mf_reg", type=float, default=co.MF_REG,
                   help=f"matrix factorisation regularisation (default {co.MF_REG})")
    p.add_argument("--vivaldi_dims", type=int, default=co.VIVALDI_DIMS,
                   help=f"Vivaldi coordinate dimensions, plus a height (default {co.VIVALDI_DIMS})")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return p


def open_dataset(root: str, version: int | None = None):
    """Open a dataset for the baselines alone, at ``version`` (None or 0: the latest): the data contract's
    manifest and file checks (sizes and record counts), and a tokenizer this code decodes; no model config
    to compare with. A remote ``root`` is staged into the default cache first (``$PING_LLM_CACHE_DIR``, else
    ``~/.cache/ping-llm``), as training does."""
    from beam_pipelines import dataset as contract
    from tokenizer import TokenizerMismatch, check_tokenizer
    from trainer import staging
    from trainer.data import Dataset

    root = staging.local_data_dir(root, None, version)  # an s3:// or gs:// data_dir: its verified copy in the cache
    full = contract.read_manifest(root)
    manifest = contract.select_version(full, version or None, root=root)  # that version's files only
    tok = manifest["tokenizer"]
    try:  # the one tokenizer check: any scheme this code decodes (the baselines read records through it)
        check_tokenizer(tok, manifest["seq_len"])
    except TokenizerMismatch as err:
        raise DatasetError(f"{root}: {err}; this evaluation decodes no such tokenizer") from None
    contract.verify_dataset(root, manifest, checksums=False)
    return Dataset(root=root, manifest=manifest, seq_len=manifest["seq_len"], pad_id=tok["pad_id"],
                   version=manifest["version"], latest_version=contract.dataset_versions(full)[-1]["version"])


def _check_decodable(name: str, workdir: str) -> None:
    """Refuse (UsageError, exit 2) a checkpoint of a tokenizer scheme without a constrained-decoding grammar:
    the model's RTT prompts and samples need one (v1 and v2 have theirs)."""
    from tokenizer import get_scheme

    if get_scheme(name).grammar is None:
        raise UsageError(
            f"{workdir}: the checkpoint's tokenizer {name} has no constrained-decoding grammar yet, which the model's "
            f"evaluation and prediction need; trainer.evaluate --baselines_only reads {name} datasets"
        )


def _check_args(args) -> None:
    if args.baselines_only:
        given = [name for name in MODEL_ONLY if getattr(args, name) is not None]
        if given:
            raise UsageError(f"--baselines_only takes no model options (got --{', --'.join(given)})")
        if args.max_measurements is None:
            args.max_measurements = 0
    else:
        if args.workdir is None:
            raise UsageError("--workdir is required (or --baselines_only to score the baselines without a model)")
        for name, value in _MODEL_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        if args.max_measurements is None:
            args.max_measurements = 1000
        if args.samples is not None and args.samples <= 0:
            raise UsageError("--samples must be positive (leave it out for no sampling)")
        args.samples = args.samples or 0
        for name in ("batch_size", "max_rows"):
            if getattr(args, name) <= 0:
                raise UsageError(f"--{name} must be positive")
        if args.nll_batches < 0:
            raise UsageError("--nll_batches must be >= 0")
    if args.max_measurements < 0:
        raise UsageError("--max_measurements must be >= 0")
    if args.mf_rank <= 0 or args.vivaldi_dims <= 0:
        raise UsageError("--mf_rank and --vivaldi_dims must be positive")
    if not (args.mf_reg > 0 and math.isfinite(args.mf_reg)):
        raise UsageError("--mf_reg must be a positive number")


def run(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code: 0 done, 2 bad arguments, a missing checkpoint or dataset
    (``beam_pipelines.common.errors``; a failure during the evaluation raises, exit 1)."""
    try:
        args = parse_options(_parser(), argv)
    except UsageError as err:  # an unknown or bad option: one error line, nothing read or written
        return errors.report(err)
    from trainer import data

    loaded = None
    try:
        _check_args(args)
        if args.baselines_only:
            dataset = open_dataset(args.data_dir, args.data_version)
        else:
            from trainer.eval import sampling

            loaded = sampling.load(args.workdir, args.step)
            _check_decodable(loaded.config.tokenizer, args.workdir)
            # The checkpoint's config names the version it was trained on (data_version); --data_version overrides.
            config = loaded.config if args.data_version is None else dataclasses.replace(
                loaded.config, data_version=args.data_version)
            dataset = data.open_dataset(args.data_dir, config)
        for split in (args.split, args.train_split):
            dataset.num_records(split)  # raises DatasetError naming the splits there are
    except (UsageError, InputError) as err:  # CheckpointError and DatasetError are InputErrors
        return errors.report(err)
    fitting = {"mf_rank": args.mf_rank, "mf_reg": args.mf_reg, "vivaldi_dims": args.vivaldi_dims,
               "choose_by": args.choose_by}
    # Records are read while evaluating: a records file that cannot be read or a record that is not a
    # well-formed token stream (both DatasetErrors) is bad input, one error line, before any report file.
    try:
        if loaded is None:
            report, table = evaluate_baselines(dataset, args.split, train_split=args.train_split,
                                               max_measurements=args.max_measurements, seed=args.seed, **fitting)
        else:
            if loaded.fingerprint and loaded.fingerprint != dataset.fingerprint:
                print(f"warning: the model was trained on dataset {loaded.fingerprint[:12]}, evaluating on "
                      f"{dataset.fingerprint[:12]}", file=sys.stderr)
            report, table = evaluate(
                loaded, dataset, args.split, train_split=args.train_split, max_measurements=args.max_measurements,
                samples=args.samples, seed=args.seed, nll_batches=args.nll_batches, batch_size=args.batch_size,
                max_rows=args.max_rows, progress=args.progress, **fitting,
            )
            report["meta"]["workdir"] = os.path.abspath(args.workdir)  # for the record only
    except InputError as err:
        return errors.report(err)
    paths = write_report(report, table, args.output)
    print(render_markdown(report).split("## Per-field")[0].split("![")[0].strip())
    print(f"wrote {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
