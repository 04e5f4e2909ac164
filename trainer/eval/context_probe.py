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

import argparse
import json
import math
import sys

import numpy as np

from beam_pipelines.common import errors
from beam_pipelines.common.errors import InputError, UsageError
from tokenizer.vocab import DEST_IP_START, RTT_START
from trainer.eval import baselines as bl
from trainer.eval import columns

GROUPS = ("pair_before", "pair_after", "new_before", "new_after")


def measurement_groups(records: np.ndarray) -> tuple[columns.Columns, np.ndarray, np.ndarray]:
    """Columns of ``records``, each measurement's RTT block start (flat index) and its group (index into GROUPS)."""
    cols = columns.decode_block(records, columns.Addresses())
    flat = records.reshape(-1)
    rtt_pos = np.flatnonzero(flat == RTT_START)  # one per measurement, in order
    dst_pos = np.flatnonzero(flat == DEST_IP_START)
    ctx = bl.pair_context(cols.record, cols.src, cols.dst, cols.rtt)
    pair = np.isfinite(ctx.last)
    before = dst_pos < rtt_pos
    group = np.where(pair, np.where(before, 0, 1), np.where(before, 2, 3))
    return cols, rtt_pos, group


def rtt_byte_bits(loaded, records: np.ndarray, rtt_pos: np.ndarray, batch: int = 8) -> np.ndarray:
    """(measurements, 8) bits the model spends on each RTT byte (teacher forcing over the stored records)."""
    import jax

    from trainer.data import make_example
    from trainer.train import token_losses

    loss = jax.jit(lambda p, x, y: token_losses(loaded.graphdef, p, x, y))
    seq = records.shape[1]
    ce = np.zeros(records.shape, np.float32)
    for lo in range(0, len(records), batch):
        ex = make_example(records[lo : lo + batch], loaded.config.pad_id)
        ce[lo : lo + batch] = np.asarray(loss(loaded.params, ex["inputs"], ex["targets"]))
    flat = ce.reshape(-1)
    # ce[i] is the loss of predicting token i + 1: byte k of the block at p is predicted at p + k.
    idx = rtt_pos[:, None] + np.arange(8)[None, :]  # (measurements, 8)
    assert np.all(idx // seq == rtt_pos[:, None] // seq)
    return flat[idx] / math.log(2)


def run(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 done, 2 bad arguments, checkpoint or dataset."""
    from trainer import data
    from trainer.eval import sampling
    from trainer.eval.evaluate import read_records

    p = argparse.ArgumentParser(prog="python -m trainer.eval.context_probe", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--records", type=int, default=64)
    p.add_argument("--steps", default="", help="checkpoint steps, comma-separated (default: the latest)")
    args = p.parse_args(argv)
    try:
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
    records = read_records(dataset, args.split)[: args.records]
    cols, rtt_pos, group = measurement_groups(records)
    ok = cols.rtt > 0  # a failure's RTT (-1.0) is one fixed pattern: leave it out
    for step in steps:
        loaded = first if step in (None, first.step) else sampling.load(args.workdir, step)
        bits = rtt_byte_bits(loaded, records, rtt_pos)
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
