"""The baselines over a split: fitted on the train split, scored block by block on the evaluated one.

* :func:`fit_and_score` fits every baseline on the train split (:mod:`trainer.eval.fitting`) and keeps their
  predictions for the chosen measurements of the evaluated split (:func:`score_split`, with the model's
  prompts when a model is evaluated).
* :func:`evaluate_baselines` is ``trainer.evaluate --baselines_only``: those predictions' figures, no model.
* :func:`baselines_meta` and :func:`measurement_table` give the report's ``meta`` and the per-measurement
  table that both evaluations write (:mod:`trainer.eval.report`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import time

import numpy as np

from beam_pipelines.dataset import DatasetError
from tokenizer import get_scheme
from trainer.eval import baselines as bl
from trainer.eval import choice, columns, fitting, spill
from trainer.eval import coordinates as co

# Every baseline, in the report's order: train medians, the field's coordinate predictors, then the ones
# that read the pair's earlier measurements in the record (what the model also sees).
ALL_BASELINES = (*bl.NAMES, co.MF, co.VIVALDI, *bl.CONTEXT_NAMES)


def block_predictions(fitted: fitting.Fitted, cols: columns.Columns) -> dict[str, bl.Prediction]:
    """Every baseline's predictions for every measurement of a block of whole records (``cols``)."""
    return _submit_block(None, fitted, cols)()


def _submit_block(pool, fitted: fitting.Fitted, cols: columns.Columns):
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


def score_split(fitted: fitting.Fitted, dataset, split: str, addresses: columns.Addresses, *, max_measurements: int,
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


def fit_and_score(dataset, split: str, train_split: str, *, max_measurements: int, seed: int, prompts: bool,
                  mf_rank: int, mf_reg: float, vivaldi_dims: int, timings: dict,
                  choose_by: str = "position") -> tuple[Scored, fitting.Fitted, columns.Addresses]:
    """Fit the baselines on ``train_split`` and score the chosen measurements of ``split``: ``(scored, fitted,
    addresses)``, the addresses' ids shared by both splits; the fit's and the scoring's seconds go into
    ``timings`` (``fit_s``, ``score_s``, and the fit's own parts)."""
    addresses = columns.Addresses()
    t0 = time.perf_counter()
    fitted = fitting.fit_split(dataset, train_split, addresses, mf_rank=mf_rank, mf_reg=mf_reg,
                               vivaldi_dims=vivaldi_dims, seed=seed, timings=timings)
    timings["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = score_split(fitted, dataset, split, addresses, max_measurements=max_measurements, seed=seed,
                         prompts=prompts, choose_by=choose_by)
    timings["score_s"] = time.perf_counter() - t0
    return scored, fitted, addresses


def baselines_meta(dataset, split, train_split, scored: Scored, fitted: fitting.Fitted, *, mf_rank, mf_reg,
                   vivaldi_dims, seed, timings, choose_by: str = "position") -> dict:
    """The report's ``meta`` for the baselines' part: the dataset and splits, what was fitted and scored, the
    baselines' settings, the seed and ``timings`` (the dict itself, so later timings still reach it)."""
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
    scored, fitted, addresses = fit_and_score(
        dataset, split, train_split, max_measurements=max_measurements, seed=seed, prompts=False,
        mf_rank=mf_rank, mf_reg=mf_reg, vivaldi_dims=vivaldi_dims, timings=timings, choose_by=choose_by)
    t0 = time.perf_counter()
    true = scored.cols.rtt
    report = {
        "rtt": {"baselines": {name: bl.metrics(true, p) for name, p in scored.predictions.items()}},
        "meta": baselines_meta(dataset, split, train_split, scored, fitted, mf_rank=mf_rank, mf_reg=mf_reg,
                               vivaldi_dims=vivaldi_dims, seed=seed, timings=timings, choose_by=choose_by),
    }
    timings["metrics_s"] = time.perf_counter() - t0
    return report, measurement_table(scored, addresses, addresses_text)


def measurement_table(scored: Scored, addresses: columns.Addresses, text: bool = True) -> dict:
    """The per-measurement table (``predictions.csv``'s columns): where each scored measurement is, its
    addresses (as text, or their ids with ``text=False``), time and true RTT, then every baseline's
    prediction."""
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
