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
* The baselines' part runs in :mod:`trainer.eval.scoring`, the model's in :mod:`trainer.eval.model_eval`; this
  module is the command.
* Writes ``R/report.json``, ``R/report.md`` (model vs baselines), ``R/report.html`` (the same, figures
  embedded), ``R/rtt_pred_vs_true.png``, ``R/reliability.png`` (with a model) and ``R/predictions.csv``
  (one row per evaluated measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

from beam_pipelines.common import errors
from beam_pipelines.common.cli import StrictArgumentParser, parse_options
from beam_pipelines.common.errors import InputError, UsageError
from beam_pipelines.common.tricks import keep_freed_memory_for_xla
from trainer import data
from trainer.eval import choice, scoring
from trainer.eval import coordinates as co
from trainer.eval.report import render_markdown, write_report

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
    loaded = None
    try:
        _check_args(args)
        if args.baselines_only:
            dataset = data.open_dataset(args.data_dir, version=args.data_version)
        else:
            # The model's side is imported here, not at the top: jax and flax, 2.0 s of CPU at start-up against
            # 0.5 s for the rest of this command (2-core AMD EPYC dev machine), which --baselines_only never needs.
            from trainer.eval import model_eval, sampling

            keep_freed_memory_for_xla()  # before JAX starts its backend (the function says why)
            loaded = sampling.load(args.workdir, args.step)
            sampling.check_decodable(loaded.config.tokenizer, args.workdir)
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
            report, table = scoring.evaluate_baselines(dataset, args.split, train_split=args.train_split,
                                                       max_measurements=args.max_measurements, seed=args.seed,
                                                       **fitting)
        else:
            if loaded.fingerprint and loaded.fingerprint != dataset.fingerprint:
                print(f"warning: the model was trained on dataset {loaded.fingerprint[:12]}, evaluating on "
                      f"{dataset.fingerprint[:12]}", file=sys.stderr)
            report, table = model_eval.evaluate(
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
