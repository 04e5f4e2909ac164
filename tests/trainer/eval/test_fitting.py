"""The bucketed fit (trainer.eval.fitting) against the in-memory fits on the whole split, and the radix select."""

from __future__ import annotations

import dataclasses

import numpy as np

from trainer import data
from trainer.eval import baselines as bl
from trainer.eval import columns, fitting
from trainer.eval import coordinates as co


def _equal(a, b, what):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x):
            _equal(x, y, f"{what}.{f.name}")
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{what}.{f.name}")


def test_bucketed_fit_equals_the_in_memory_fits(eval_dataset, tmp_path):
    dataset = data.open_dataset(str(eval_dataset))
    train = columns.decode_split(dataset, "train", columns.Addresses())  # ids in order of first appearance
    tables = bl.fit(bl.Observations(train.src, train.dst, train.rtt, train.timestamp))
    factorization = co.fit_factorization(train.src, train.dst, train.rtt, rank=4)
    vivaldi = co.fit_vivaldi(train.src, train.dst, train.rtt, dims=3)
    fitted = fitting.fit_split(dataset, "train", columns.Addresses(), mf_rank=4, vivaldi_dims=3,
                               bucket_rows=30_000, spill_dir=str(tmp_path))
    assert fitted.buckets == 4  # 99k train measurements
    assert [p.name.startswith("ping-llm-pairs-") for p in tmp_path.iterdir()] == [True]  # only the pair store
    assert fitted.train_measurements == len(train)
    assert fitted.train_sources == len(np.unique(train.src))
    ok = train.rtt > 0
    assert fitted.train_pairs == len(tables.pair.keys)
    assert fitted.model_pairs == len(np.unique(train.src[ok] * (1 << 32) + train.dst[ok]))  # every pair: few
    assert len(fitted.tables.pair.keys) == 0  # the pairs are on disk
    _equal(fitting.full_tables(fitted), tables, "tables")
    _equal(fitted.factorization, factorization, "factorization")
    _equal(fitted.vivaldi, vivaldi, "vivaldi")
    fitted.pairs.close()
    assert list(tmp_path.iterdir()) == []  # every file removed


def test_out_of_core_fit_equals_the_in_memory_fit_in_many_spill_files(eval_dataset, tmp_path):
    # Buckets of 1,500 measurements: 67 bucket files per field and as many pair files; predictions from the
    # per-block pair tables equal the in-memory tables' for every baseline, on the test split's blocks.
    dataset = data.open_dataset(str(eval_dataset))
    addresses = columns.Addresses()
    train = columns.decode_split(dataset, "train", addresses)
    tables = bl.fit(bl.Observations(train.src, train.dst, train.rtt, train.timestamp))
    fitted = fitting.fit_split(dataset, "train", columns.Addresses(), mf_rank=4, vivaldi_dims=3,
                               bucket_rows=1_500, spill_dir=str(tmp_path))
    assert fitted.buckets == 67
    _equal(fitting.full_tables(fitted), tables, "tables")
    test = columns.decode_split(dataset, "test", addresses)
    # Test sources are unseen in train (split by source): pair each test destination with train sources too.
    rng = np.random.default_rng(0)
    src = np.concatenate([test.src, train.src[rng.integers(0, len(train), 5000)], train.src[:3000]])
    dst = np.concatenate([test.dst, train.dst[rng.integers(0, len(train), 5000)], train.dst[:3000]])
    found = expected = 0
    train_pairs = set(zip(train.src.tolist(), train.dst.tolist()))
    for lo in range(0, len(src), 2_000):
        s, d = src[lo : lo + 2_000], dst[lo : lo + 2_000]
        block = fitting.block_tables(fitted, s, d)
        found += len(block.pair.keys)
        expected += len(set(zip(s.tolist(), d.tolist())) & train_pairs)
        for name in bl.NAMES:
            _equal(bl.predict(block, name, s, d), bl.predict(tables, name, s, d), f"{name} block {lo}")
    assert found == expected > 1_000  # each block's train pairs, and only those, come from the store
    fitted.pairs.close()


def test_model_pairs_are_a_bounded_hashed_sample(eval_dataset, tmp_path):
    dataset = data.open_dataset(str(eval_dataset))
    full = fitting.fit_split(dataset, "train", columns.Addresses(), mf_rank=4, vivaldi_dims=3, bucket_rows=30_000)
    few = fitting.fit_split(dataset, "train", columns.Addresses(), mf_rank=4, vivaldi_dims=3, bucket_rows=10_000,
                            model_pairs=full.model_pairs // 4)
    assert abs(few.model_pairs - full.model_pairs / 4) < 0.1 * full.model_pairs / 4
    _equal(fitting.full_tables(few), fitting.full_tables(full), "tables")  # the table baselines use every pair
    # The sample depends on the pairs, not on the bucketing.
    again = fitting.fit_split(dataset, "train", columns.Addresses(), mf_rank=4, vivaldi_dims=3, bucket_rows=25_000,
                              model_pairs=full.model_pairs // 4)
    _equal(again.factorization, few.factorization, "factorization")
    assert len(few.factorization.src_keys) < len(full.factorization.src_keys) or len(few.vivaldi.keys) < len(
        full.vivaldi.keys)


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
