"""``python -m trainer.predict``: forward and inverse queries, field encoding, and bad input."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tokenizer import decode_measurement, encode_measurement
from tokenizer import grammar
from trainer.eval import predict


def _json_run(capsys, *args) -> dict:
    capsys.readouterr()
    assert predict.run([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_forward_query_gives_an_rtt_distribution(trained_workdir, capsys):
    answer = _json_run(capsys, "--workdir", str(trained_workdir), "--src", "10.1.2.3", "--dst", "8.8.8.8",
                       "--time", "2025-07-01T12:00:00Z", "--samples", "32", "--show", "32")
    rtt = answer["rtt"]
    assert rtt["samples"] == 32 and rtt["successful"] + rtt["invalid"] <= 32
    if rtt["successful"]:
        assert rtt["p10"] <= rtt["p50"] <= rtt["p90"]
    assert 0.0 <= rtt["failure_probability"] <= 1.0
    assert answer["given"] == {"src_addr": "10.1.2.3", "dst_addr": "8.8.8.8", "timestamp": "2025-07-01T12:00:00Z"}
    assert len(answer["measurements"]) == 32
    for m in answer["measurements"]:
        assert (m["src_addr"], m["dst_addr"], m["ip_version"]) == ("10.1.2.3", "8.8.8.8", 4)
        assert m["event_time"] == "2025-07-01T12:00:00Z"
    assert set(answer["fields"]) == {"size", "packet_error_count", "msm_id"}


@pytest.mark.slow
def test_inverse_query_samples_destinations(trained_workdir, capsys):
    answer = _json_run(capsys, "--workdir", str(trained_workdir), "--given", "src=2001:db8::7",
                       "--given", "rtt=25.5", "--samples", "16", "--show", "16", "--seed", "3")
    assert "rtt" not in answer  # given, not sampled
    assert "dst_addr" in answer["fields"] and answer["fields"]["dst_addr"]
    for m in answer["measurements"]:
        assert m["src_addr"] == "2001:db8::7" and m["rtt"] == 25.5
        assert m["ip_version"] == 6 and ":" in m["dst_addr"]  # the family follows the given source


@pytest.mark.slow
def test_text_output(trained_workdir, capsys):
    assert predict.run(["--workdir", str(trained_workdir), "--src", "10.1.2.3", "--dst", "8.8.8.8",
                        "--samples", "8", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "given: src_addr=10.1.2.3, dst_addr=8.8.8.8" in out
    assert "RTT" in out and "failure probability" in out and "first 2 samples" in out


def test_given_fields_encode_as_the_tokenizer_does():
    row = {
        "msm_id": -5, "event_time": dt.datetime(2025, 6, 24, 1, 2, 3, tzinfo=dt.timezone.utc),
        "src_addr": "2001:db8::1", "dst_addr": "2a02:1810::5", "ip_version": 6, "rtt": -1.0, "size": 1500,
        "packet_error_count": 3,
    }  # fmt: skip
    given = predict.parse_given([
        "src=2001:db8::1", "dst_addr=2a02:1810::5", "rtt=-1", "size=1500", "errors=3",
        "time=2025-06-24T01:02:03", "msm_id=-5",
    ])  # fmt: skip
    tokens = [0]
    for block in sorted(given):
        tokens += predict.encode_field(block, given[block])[0]
    assert decode_measurement(tokens) == decode_measurement(encode_measurement(row))
    blocks = grammar.split_blocks(encode_measurement(row))
    for block, value in given.items():
        assert predict.encode_field(block, value)[0] == blocks[block].tolist()


def test_time_parsing():
    assert predict.parse_time("1750723200") == 1_750_723_200
    assert predict.parse_time("2025-06-24T00:00:00Z") == 1_750_723_200
    assert predict.parse_time("2025-06-24T02:00:00+02:00") == 1_750_723_200
    assert predict.parse_time("2025-06-24") == 1_750_723_200  # no zone: UTC


@pytest.mark.parametrize(
    "args, message",
    [
        (["--src", "10.0.0.300", "--dst", "8.8.8.8"], "not an IP address"),
        (["--src", "10.0.0.1", "--given", "colour=blue"], "unknown field 'colour'"),
        (["--given", "rtt"], "expected FIELD=VALUE"),
        (["--src", "10.0.0.1", "--dst", "2001:db8::1"], "different address families"),
        (["--src", "10.0.0.1", "--given", "src_addr=10.0.0.2"], "given twice"),
        (["--time", "yesterday"], "expected epoch seconds or ISO 8601"),
        (["--given", "size=70000"], "out of range"),
        (["--given", "rtt=nan"], "must be finite"),
        (["--samples", "0"], "--samples must be positive"),
    ],
)
def test_bad_arguments_are_one_clear_error(args, message, tmp_path, capsys):
    rc = predict.run(["--workdir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_a_workdir_without_checkpoints_is_one_clear_error(tmp_path, capsys):
    rc = predict.run(["--workdir", str(tmp_path / "nothing"), "--src", "10.0.0.1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "no checkpoints/ directory" in err
    assert not (tmp_path / "nothing").exists()
