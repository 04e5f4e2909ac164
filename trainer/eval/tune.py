"""Choose the factorisation's rank and regularisation (and Vivaldi's dimensions) on the validation split.

    python -m trainer.eval.tune --data_dir D [--split val] [--ranks 2,4,8,16] [--regs 0.01,0.1,1] [--iters 12]
        [--dims 2,4,8]

Fits on ``train`` and scores every measurement of ``--split`` (never ``test``: the command refuses it), with
unseen sources folded in from their earlier measurements in the record exactly as the evaluation does;
prints one line per setting and the setting with the lowest median absolute error. The defaults in
``trainer.eval.coordinates`` (``MF_RANK``, ``MF_REG``, ``VIVALDI_DIMS``) come from this command's output
on the real RIPE Atlas file (docs/evaluation.md).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from beam_pipelines.common import errors
from beam_pipelines.common.cli import StrictArgumentParser, parse_options
from beam_pipelines.common.errors import InputError, UsageError
from trainer.data import open_dataset
from trainer.eval import baselines as bl
from trainer.eval import columns
from trainer.eval import coordinates as co


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def run(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 done, 2 bad arguments or dataset."""
    p = StrictArgumentParser(prog="python -m trainer.eval.tune", description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--split", default="val", help="split scored (default val; test is refused)")
    p.add_argument("--ranks", default="2,4,8,16")
    p.add_argument("--regs", default="0.01,0.1,1")
    p.add_argument("--iters", default=str(co.MF_ITERS), help="ALS iterations (a list: each is tried)")
    p.add_argument("--dims", default="2,4,8")
    p.add_argument("--seed", type=int, default=0)
    try:
        args = parse_options(p, argv)
        if args.split == "test":
            raise UsageError("--split test: settings are chosen on a validation split, never on test")
        ranks, regs, dims = [int(r) for r in _floats(args.ranks)], _floats(args.regs), [int(d) for d in _floats(args.dims)]
        iters = [int(i) for i in _floats(args.iters)]
        if min(ranks + dims + iters, default=1) <= 0 or min(regs, default=1) <= 0:
            raise UsageError("--ranks, --regs, --iters and --dims must be positive")
        dataset = open_dataset(args.data_dir)
        for split in ("train", args.split):
            dataset.num_records(split)
    except (UsageError, InputError, ValueError) as err:
        return errors.report(err if isinstance(err, (UsageError, InputError)) else UsageError(str(err)))
    addresses = columns.Addresses()
    try:
        train = columns.decode_split(dataset, "train", addresses)
        evald = columns.decode_split(dataset, args.split, addresses)
    except InputError as err:  # a records file that cannot be read, a malformed record
        return errors.report(err)
    tables = bl.fit(bl.Observations(train.src, train.dst, train.rtt, train.timestamp))
    fallback = bl.predict(tables, "dst_median", evald.src, evald.dst)
    results = [{"predictor": "dst_median", **_score(evald.rtt, fallback)}]
    for it in iters:
        for rank in ranks:
            for reg in regs:
                model = co.fit_factorization(train.src, train.dst, train.rtt, rank=rank, reg=reg, iters=it,
                                             seed=args.seed)
                pred = co.predict_factorization(model, evald.record, evald.src, evald.dst, evald.rtt, fallback)
                results.append({"predictor": co.MF, "rank": rank, "reg": reg, "iters": it, **_score(evald.rtt, pred)})
                print(json.dumps(results[-1]), flush=True)
    for d in dims:
        model = co.fit_vivaldi(train.src, train.dst, train.rtt, dims=d, seed=args.seed)
        pred = co.predict_vivaldi(model, evald.record, evald.src, evald.dst, evald.rtt, fallback)
        results.append({"predictor": co.VIVALDI, "dims": d, **_score(evald.rtt, pred)})
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps(results[0]))
    for name in (co.MF, co.VIVALDI):
        rows = [r for r in results if r["predictor"] == name]
        if rows:
            best = min(rows, key=lambda r: r["median_abs_error_ms"])
            print(f"best {name}: {json.dumps(best)}")
    return 0


def _score(true: np.ndarray, pred: bl.Prediction) -> dict:
    m = bl.metrics(true, pred)
    return {k: m[k] for k in ("median_abs_error_ms", "median_abs_log_ratio", "mean_abs_error_ms")} | {
        "fallback_dst": m["fallback"]["dst_median"]}


if __name__ == "__main__":
    sys.exit(run())
