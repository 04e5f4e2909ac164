"""The bucketed fit (trainer.eval.fitting) against the in-memory fits on the whole split, and the radix select."""

from __future__ import annotations

import dataclasses

import numpy as np

from trainer.eval import baselines as bl
from trainer.eval import columns, evaluate, fitting
from trainer.eval import coordinates as co


def _equal(a, b, what):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x):
            _equal(x, y, f"{what}.{f.name}")
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{what}.{f.name}")


def test_bucketed_fit_equals_the_in_memory_fits(eval_dataset, tmp_path):
    dataset = evaluate.open_dataset(str(eval_dataset))
    train = columns.decode_split(dataset, "train", columns.Addresses())  # ids in order of first appearance
    tables = bl.fit(bl.Observations(train.src, train.dst, train.rtt, train.timestamp))
    factorization = co.fit_factorization(train.src, train.dst, train.rtt, rank=4)
    vivaldi = co.fit_vivaldi(train.src, train.dst, train.rtt, dims=3)
    fitted = fitting.fit_split(dataset, "train", columns.Addresses(), mf_rank=4, vivaldi_dims=3,
                               bucket_rows=30_000, spill_dir=str(tmp_path))
    assert fitted.buckets == 4  # 99k train measurements
    assert list(tmp_path.iterdir()) == []  # the bucket files are removed
    assert fitted.train_measurements == len(train)
    assert fitted.train_sources == len(np.unique(train.src))
    _equal(fitted.tables, tables, "tables")
    _equal(fitted.factorization, factorization, "factorization")
    _equal(fitted.vivaldi, vivaldi, "vivaldi")


def test_order_statistics_equal_a_sort():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.round(rng.lognormal(3, 1, 5000), 2), np.zeros(7), [-0.0], np.full(30, 12.5)])
    rng.shuffle(values)
    parts = np.array_split(values, 7)
    ranks = [0, 1, 500, 2519, 2520, len(values) - 1]
    got = fitting.order_statistics(lambda: iter(parts), ranks)
    want = np.sort(values)
    assert got == {k: float(want[k]) for k in ranks}


def test_global_table_equals_the_in_memory_one():
    rng = np.random.default_rng(1)
    rtt = rng.lognormal(3, 1, 1001)
    rtt[rng.random(1001) < 0.1] = -1.0
    want = bl.fit(bl.Observations(np.zeros(1001, np.int64), np.zeros(1001, np.int64), rtt, np.arange(1001))).global_
    ok = rtt[rtt >= 0]
    got = fitting._global_table(lambda: iter(np.array_split(ok, 3)), len(ok), len(rtt), int((rtt < 0).sum()))
    _equal(got, want, "global")
