"""The model's part of an evaluation: its per-field NLL over a split, and its RTT prediction for the chosen
measurements beside the baselines (:mod:`trainer.eval.scoring`).

* :func:`rtt_prompt`: what the model reads before a measurement's RTT (the scheme's ``rtt_prompt_at``).
* :func:`per_field_nll`: the trainer's evaluation step over the split, in bits per token and per field.
* :func:`sample_rtts`: RTTs drawn from the model, ``--samples`` per measurement (``model_sampled``).
* :func:`evaluate`: the whole evaluation with a model; the RTT distribution is read by descent
  (:mod:`trainer.eval.quantiles`) and scored by :mod:`trainer.eval.probabilistic`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from tokenizer import get_scheme
from trainer import augment
from trainer.eval import baselines as bl
from trainer.eval import coordinates as co
from trainer.eval import probabilistic as pr
from trainer.eval import quantiles as qt
from trainer.eval import scoring
from trainer.eval.report import MODEL, MODEL_SAMPLED
from trainer.eval.sampling import Sampler, sample
from trainer.eval_stream import eval_batches
from trainer.steps import make_eval_step


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
    per_batch = max(1, max_rows // max(samples, 1))
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out = np.full((len(prompts), samples), np.nan)
    bar = None
    if progress:
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


def per_field_nll(loaded, dataset, split: str, *, batch_size: int, max_batches: int = 0) -> tuple[dict, dict]:
    """Bits per token and per field, per field kind, over ``split`` (the trainer's evaluation step).

    Returns ``(nll_per_field, nll_total)``. A field's bits are summed over its tokens and divided by
    the number of measurements (every measurement has one field of each kind; ``role`` counts all ten
    role tokens of a measurement, except a record's first MeasurementStart, which is never a target).
    """
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
    timings = {}
    t0 = time.perf_counter()
    nll_per_field, nll_total = per_field_nll(loaded, dataset, split, batch_size=batch_size, max_batches=nll_batches)
    timings["nll_s"] = time.perf_counter() - t0

    scored, fitted, addresses = scoring.fit_and_score(
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

    meta = scoring.baselines_meta(dataset, split, train_split, scored, fitted, mf_rank=mf_rank, mf_reg=mf_reg,
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
    table = scoring.measurement_table(scored, addresses)
    table[MODEL] = model_pred
    if sampled_pred is not None:
        table[MODEL_SAMPLED] = sampled_pred
    return report, table
