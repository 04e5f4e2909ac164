"""Predictions kept on disk (trainer.eval.spill) read back as what was appended."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.eval import baselines as bl
from trainer.eval import spill


def _pred(rng, n):
    return bl.Prediction(rng.normal(size=n), rng.normal(size=n), np.full(n, np.nan), rng.random(n),
                         rng.integers(0, 3, n))


def test_spilled_predictions_read_back_byte_for_byte(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [{"a": _pred(rng, n), "b": _pred(rng, n)} for n in (5, 0, 17, 1)]
    store = spill.SpilledPredictions(str(tmp_path))
    for block in blocks:
        store.append(block)
    assert store.rows == 23 and list(store) == ["a", "b"] and len(store) == 2
    for name in ("a", "b"):
        got = store[name]
        want = bl.Prediction.concat([b[name] for b in blocks])
        for field in ("value", "low", "high", "fail_prob", "level"):
            a, w = np.asarray(getattr(got, field)), getattr(want, field)
            assert a.dtype == w.dtype and a.tobytes() == w.tobytes(), (name, field)
    with pytest.raises(KeyError):
        store["c"]
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_spilled_predictions_refuse_blocks_that_do_not_match(tmp_path):
    rng = np.random.default_rng(1)
    store = spill.SpilledPredictions(str(tmp_path))
    store.append({"a": _pred(rng, 3)})
    with pytest.raises(ValueError, match="predictors"):
        store.append({"b": _pred(rng, 3)})
    assert store.rows == 3
    two = spill.SpilledPredictions(str(tmp_path))
    with pytest.raises(ValueError, match="different lengths"):
        two.append({"a": _pred(rng, 2), "b": _pred(rng, 3)})
    empty = spill.SpilledPredictions(str(tmp_path))
    empty.append({"a": _pred(rng, 0)})
    assert len(empty["a"].value) == 0


def test_table_keeps_a_dicts_order_and_reads_spilled_items_on_access(tmp_path):
    rng = np.random.default_rng(2)
    store = spill.SpilledPredictions(str(tmp_path))
    store.append({"p": _pred(rng, 4), "q": _pred(rng, 4)})
    table = spill.Table({"true_rtt": np.arange(4.0)}, store)
    table["model"] = _pred(rng, 4)
    assert list(table) == ["true_rtt", "p", "q", "model"] and len(table) == 4
    assert np.array_equal(table["q"].value, store["q"].value)
    del table["model"]
    assert list(table) == ["true_rtt", "p", "q"]
