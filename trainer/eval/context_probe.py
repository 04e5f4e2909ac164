"""Does the model read the pair's earlier RTT from its context? The RTT-byte loss, split by what it could see.

    python -m trainer.eval.context_probe --workdir W --data_dir D [--split test] [--records 64] [--steps 200,400]

For every measurement of the first ``--records`` records of ``--split`` (the records as stored, in their
on-disk field order, as training sees them), the model's loss on the eight RTT byte tokens, in bits, per
byte position, averaged over four groups:

* ``pair_before``: the same (source, destination) has a successful measurement earlier in the record and
  this measurement's destination block comes before its RTT block (copying is possible);
* ``pair_after``: the pair is earlier in the record but the destination block comes after the RTT block
  (the model cannot know yet which earlier RTT to copy);
* ``new_before`` / ``new_after``: no earlier successful measurement of the pair.

If the model copied, ``pair_before`` would have far fewer bits on the leading bytes (sign, exponent and the
top of the mantissa fix the RTT to a few percent) than the other groups. Prints one JSON line per checkpoint
step. Cheap: forward passes only.
"""

from __future__ import annotations

import json
import math
import sys

import jax
import numpy as np

import tokenizer
from beam_pipelines.common import errors
from beam_pipelines.common.cli import StrictArgumentParser, parse_options
from beam_pipelines.common.errors import InputError, UsageError
from trainer import data
from trainer.eval import baselines as bl
from trainer.eval import columns, sampling
from trainer.example import make_example
from trainer.steps import token_losses

GROUPS = ("pair_before", "pair_after", "new_before", "new_after")


def measurement_groups(records: np.ndarray, scheme: tokenizer.Scheme | None = None
                       ) -> tuple[columns.Columns, np.ndarray, np.ndarray]:
    """Columns of ``records``, each measurement's first RTT value token (flat index) and its group (index
    into GROUPS). ``scheme``: the dataset's tokenizer scheme (None: v1)."""
    scheme = scheme or tokenizer.get_scheme("v1")
    parsed = scheme.parse_records(records)
    cols = columns.decode_block(records, columns.Addresses(), scheme=scheme)
    rtt_pos, dst_pos = parsed.rtt_pos, parsed.dst_pos  # one per measurement, in order
    ctx = bl.pair_context(cols.record, cols.src, cols.dst, cols.rtt)
    pair = np.isfinite(ctx.last)
    before = dst_pos < rtt_pos
    group = np.where(pair, np.where(before, 0, 1), np.where(before, 2, 3))
    return cols, rtt_pos, group


def rtt_byte_bits(loaded, records: np.ndarray, rtt_pos: np.ndarray, batch: int = 8, width: int | None = None
                  ) -> np.ndarray:
    """(measurements, width) bits the model spends on each RTT value token (teacher forcing over the stored
    records); ``rtt_pos``: each RTT's first value token (flat), ``width``: value tokens (None: v1's)."""
    loss = jax.jit(lambda p, x, y: token_losses(loaded.graphdef, p, x, y))
    seq = records.shape[1]
    ce = np.zeros(records.shape, np.float32)
    for lo in range(0, len(records), batch):
        ex = make_example(records[lo : lo + batch], loaded.config.pad_id)
        ce[lo : lo + batch] = np.asarray(loss(loaded.params, ex["inputs"], ex["targets"]))
    flat = ce.reshape(-1)
    width = width or tokenizer.get_scheme("v1").rtt.width
    # ce[i] is the loss of predicting token i + 1: value token k at p + k is predicted at p + k - 1.
    idx = rtt_pos[:, None] - 1 + np.arange(width)[None, :]  # (measurements, width)
    assert np.all(idx // seq == rtt_pos[:, None] // seq)
    return flat[idx] / math.log(2)


def run(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 done, 2 bad arguments, checkpoint or dataset."""
    p = StrictArgumentParser(prog="python -m trainer.eval.context_probe", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--records", type=int, default=64)
    p.add_argument("--steps", default="", help="checkpoint steps, comma-separated (default: the latest)")
    try:
        args = parse_options(p, argv)
        steps = [int(s) for s in args.steps.split(",") if s] or [None]
        if args.records <= 0:
            raise UsageError("--records must be positive")
        first = sampling.load(args.workdir, steps[0])
        dataset = data.open_dataset(args.data_dir, first.config)
        dataset.num_records(args.split)
    except ValueError as err:
        return errors.report(UsageError(str(err)))
    except (UsageError, InputError) as err:
        return errors.report(err)
    records = columns.read_records(dataset, args.split)[: args.records]
    scheme = tokenizer.get_scheme(dataset.manifest["tokenizer"])
    cols, rtt_pos, group = measurement_groups(records, scheme)
    ok = cols.rtt > 0  # a failure's RTT (-1.0) is one fixed pattern: leave it out
    for step in steps:
        loaded = first if step in (None, first.step) else sampling.load(args.workdir, step)
        bits = rtt_byte_bits(loaded, records, rtt_pos, width=scheme.rtt.width)
        out = {"step": loaded.step, "measurements": int(ok.sum())}
        for g, name in enumerate(GROUPS):
            sel = ok & (group == g)
            out[name] = {
                "measurements": int(sel.sum()),
                "bits_per_byte": [round(float(x), 3) for x in bits[sel].mean(axis=0)] if sel.any() else None,
                "bits_first2": round(float(bits[sel][:, :2].sum(axis=1).mean()), 3) if sel.any() else None,
                "bits_total": round(float(bits[sel].sum(axis=1).mean()), 3) if sel.any() else None,
            }
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
