"""The model's part of an evaluation: its RTT prompts leak nothing of the RTT, and RTT tokens decode."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tests.trainer.helpers import make_config
from tokenizer import decode_measurement, encode_measurement, split_measurements
from tokenizer.vocab import PAD, RTT_START
from trainer import data
from trainer.eval import columns, model_eval, sampling


@pytest.fixture(scope="module")
def test_records(eval_dataset) -> np.ndarray:
    dataset = data.open_dataset(str(eval_dataset), make_config(eval_dataset))
    return columns.read_records(dataset, "test")


def _with_rtt(record: np.ndarray, index: int, rtt: float) -> tuple[np.ndarray, int, int]:
    """A copy of ``record`` whose ``index``-th measurement has another RTT (re-encoded, so its on-disk
    block order may change too), and that measurement's span."""
    measurements = split_measurements(record)
    start = sum(len(m) for m in measurements[:index])
    end = start + len(measurements[index])
    row = decode_measurement(measurements[index])
    tokens = encode_measurement({**row, "rtt": rtt})
    assert len(tokens) == end - start
    out = record.copy()
    out[start:end] = tokens
    return out, start, end


@pytest.mark.slow
def test_rtt_prediction_sees_nothing_of_the_measurements_own_rtt(test_records, loaded_model):
    record = test_records[3]
    index = 5
    variants = [_with_rtt(record, index, rtt) for rtt in (decode_measurement(split_measurements(record)[index])["rtt"],
                                                          -1.0, 0.125, 987.654)]
    orders = {tuple(r[s:e][np.isin(r[s:e], [1, 2, 5, 6, 7, 8, 9])].tolist()) for r, s, e in variants}
    assert len(orders) > 1  # the on-disk block order moved with the RTT: it must not reach the prompt either
    prompts = [model_eval.rtt_prompt(r, s, e) for r, s, e in variants]
    for p in prompts[1:]:
        np.testing.assert_array_equal(p, prompts[0])
    _, start, end = variants[0]
    prompt = prompts[0]
    assert len(prompt) == end - 8  # the record before the measurement + the measurement minus its 8 RTT bytes
    np.testing.assert_array_equal(prompt[:start], record[:start])
    assert prompt[-1] == RTT_START and (prompt[start:] == RTT_START).sum() == 1
    assert PAD not in prompt
    # And the model's samples are the same whatever the true RTT.
    sampler = sampling.Sampler.from_loaded(loaded_model)
    samples = [model_eval.sample_rtts(sampler, [model_eval.rtt_prompt(r, s, e)], 16, seed=3) for r, s, e in variants]
    for s in samples[1:]:
        np.testing.assert_array_equal(s, samples[0])
    assert samples[0].shape == (1, 16)


def test_rtt_tokens_decode_as_big_endian_float64():
    values = [0.0, -1.0, 12.345, 1e300]
    tokens = np.array([[10 + b for b in struct.pack(">d", v)] for v in values])
    assert model_eval.rtt_from_tokens(tokens).tolist() == values
    assert model_eval.rtt_from_tokens(tokens.reshape(2, 2, 8)).shape == (2, 2)
