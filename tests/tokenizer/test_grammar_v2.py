"""Scheme v2's token grammar: every record v2 writes passes it token by token, every token it forbids makes
the record malformed, and random draws under its masks always decode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tests.tokenizer.test_v2 import _items, _pack, _row, tables
from tokenizer import DecodeError, get_scheme
from tokenizer import grammar_v2 as g
from tokenizer import vocab_v2 as vocab

SCHEME = get_scheme("v2")


def _walk(record) -> tuple[bool, list]:
    """Feed a record token by token: (every token allowed, the allowed masks before each token)."""
    state = g.initial(1)
    masks = []
    for t in _content(record):
        mask = g.allowed(state)[0]
        masks.append(mask)
        if not mask[t]:
            return False, masks
        state = g.advance(state, np.array([t]))
    return bool(state.done[0] or not len(_content(record))), masks


def _content(record) -> np.ndarray:
    """A record's tokens before its PAD suffix (PAD is not a token of the grammar)."""
    record = np.asarray(record, np.int64)
    return record[: int(np.sum(record != vocab.PAD))]


def _accepts_in_batch(records: np.ndarray) -> bool:
    """The vectorized path: all records of a batch at once, one position per step (a row stops at its PAD)."""
    records = np.asarray(records, np.int64)
    state = g.initial(len(records))
    for t in records.T:
        active = t != vocab.PAD
        if not (g.allowed(state)[np.arange(len(records)), np.where(active, t, 0)] | ~active).all():
            return False
        state = g.advance(state, t, active)
    return bool(state.done.all())


@pytest.mark.slow  # 80 random tables, each walked token by token: over ~2 s on 2 cores
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_every_record_of_random_rows_is_grammatical(table):
    enc, _, items = _items(table)
    if not len(enc.accepted):
        return
    records = _pack(items, 100)  # short records: many runs start at a record's start
    assert _accepts_in_batch(records)
    for record in records[:3]:
        ok, _ = _walk(record)
        assert ok


def _sample_records(seed: int = 0, n: int = 60) -> np.ndarray:
    rows = []
    rng = np.random.default_rng(seed)
    for i in range(n):
        src = ["192.0.2.1", "192.0.2.9", "10.0.0.1"][i % 3]
        t = 1_000_000 + int(rng.integers(0, 300)) * i + (70_000 if i % 7 == 0 else 0)
        rows.append(_row(t, rtt=float(rng.choice([-1.0, 0.0, 12.5, 1e9, 250.0])), src=src))
    rows.append({**_row(5000, src="2001:db8::1", dst="2001:4860:4860::8888"), "ip_version": 6})
    from tests.tokenizer.test_table import make_table

    return _pack(_items(make_table(rows))[2], 128)


def test_the_scheme_owns_its_grammar():
    assert SCHEME.grammar is g
    assert get_scheme("v1").grammar is not g


def test_forbidden_tokens_make_the_record_malformed():
    """At each position of real v2 records, every token the grammar forbids there, put in place of the
    record's token (or inserted before it), gives a record the parser refuses (positions before PAD: PAD is
    not a token of the grammar)."""
    rng = np.random.default_rng(1)
    records = _sample_records()
    checked = 0
    for record in records[:4]:
        ok, masks = _walk(record)
        assert ok
        for i in rng.choice(len(masks), size=min(40, len(masks)), replace=False):
            forbidden = np.flatnonzero(~masks[i])
            for t in rng.choice(forbidden, size=min(25, len(forbidden)), replace=False):
                for bad in (np.concatenate([record[:i], [t], record[i + 1 :]]),
                            np.concatenate([record[:i], [t], record[i:]])):
                    with pytest.raises(DecodeError):
                        SCHEME.parse_records(bad.astype(np.uint16)[None])
                    checked += 1
    assert checked > 1000


def _draw(rng, prefix, n, steps=80):
    """Complete ``prefix`` (a record's beginning) n times with random logits under the grammar."""
    state = g.state_of(prefix).take(np.zeros(n, np.int64))
    out = [list(prefix) for _ in range(n)]
    for _ in range(steps):
        active = ~state.done
        if not active.any():
            break
        logits = np.where(g.allowed(state), rng.normal(size=(n, vocab.VOCAB_SIZE)) * 3, -np.inf)
        tokens = np.argmax(logits, axis=1)
        for i in np.flatnonzero(active):
            out[i].append(int(tokens[i]))
        state = g.advance(state, tokens, active)
    assert state.done.all()
    return out


_RECORD = _sample_records()[0]
_RECORD = _RECORD[_RECORD != vocab.PAD]


@pytest.mark.parametrize(
    "prefix",
    [
        [],  # a record's start: source, time and all four fields to draw
        [vocab.SRC6, *[7] * 5],  # an IPv6 source begun: the destination must be IPv6
        [vocab.SRC4, 192, 0, 2, 1, vocab.TIME32, 0, 0, 3],  # inside the first, absolute time
        _RECORD.tolist(),  # after whole measurements: a new run, a delta or an absolute time
        [vocab.SRC4, 192, 0, 2, 1, vocab.TIME32, 0, 0, 3, 232, vocab.DST4, 8, 8, 8, 8, vocab.SIZE_BASE + 64],  # RTT and errors due
        [vocab.SRC4, 192, 0, 2, 1, vocab.TIME32, 0, 0, 3, 232, vocab.RTT_COARSE_BASE + 9],  # a fine token due
    ],
)
def test_random_draws_under_the_grammar_always_decode(prefix):
    rng = np.random.default_rng(len(prefix))
    base = SCHEME.decode_record(np.array(prefix, np.uint16)) if prefix and g.state_of(prefix).done[0] else []
    left = int(g.tokens_left(g.state_of(prefix))[0]) if not g.state_of(prefix).done[0] else 56
    for tokens in _draw(rng, prefix, 150):
        assert tokens[: len(prefix)] == prefix
        rows = SCHEME.decode_record(np.array(tokens + [vocab.PAD] * 3, np.uint16))  # raises unless well-formed
        assert len(rows) >= max(len(base), 1)
        assert len(tokens) - len(prefix) <= left
        if prefix[:1] == [vocab.SRC6]:
            assert ":" in rows[-1]["dst_addr"]


def test_a_done_row_has_nothing_left_and_a_fresh_row_the_longest_measurement():
    assert g.tokens_left(g.initial(1))[0] == SCHEME.min_seq_len
    state = g.state_of(_RECORD.tolist())
    assert state.done[0] and g.tokens_left(state)[0] == 0
    assert g.is_complete(_RECORD.tolist()) and not g.is_complete(_RECORD[:-1].tolist())


def test_advance_refuses_a_forbidden_token_and_names_the_state():
    state = g.initial(2)
    with pytest.raises(g.GrammarError, match="record start"):
        g.advance(state, np.array([vocab.SRC4, vocab.DST4]))
    # an inactive row keeps its state whatever it is fed
    after = g.advance(state, np.array([vocab.SRC4, vocab.DST4]), active=np.array([True, False]))
    assert after.phase.tolist() == [g.NEED_TIME, g.RECORD_START] and after.remaining.tolist() == [4, 0]
    with pytest.raises(g.GrammarError):
        g.state_of([vocab.SRC4, 1, 2, 3, 4, vocab.DELTA_BASE])  # a run must start with an absolute time
    with pytest.raises(g.GrammarError):
        g.state_of([vocab.SRC4, 1, 2, 3, 4, vocab.TIME32, 0, 0, 0, 0, vocab.DST6])  # the run's family is IPv4
    with pytest.raises(g.GrammarError):
        g.state_of([vocab.SRC4, 1, 2, 3, 4, vocab.TIME32, 0, 0, 0, 0, vocab.ERR_BASE, vocab.ERR_BASE])  # errors twice


@pytest.mark.slow
def test_every_record_of_the_sample_dataset_is_grammatical(sample_dataset_v2):
    """``pretokenize --tokenizer v2`` on the bundled sample (the session's, tests/conftest.py): every record of
    every split passes, token by token."""
    from beam_pipelines.dataset import iter_record_blocks

    out = sample_dataset_v2
    manifest = json.loads((out / "manifest.json").read_text())
    total = 0
    for split in manifest["splits"].values():
        for f in split["files"]:
            for block in iter_record_blocks(str(out / f["path"]), manifest["seq_len"]):
                assert _accepts_in_batch(np.asarray(block))
                total += len(block)
    assert total == sum(s["records"] for s in manifest["splits"].values()) and total > 100


def test_rtt_prompts_are_the_records_tokens_up_to_the_rtt_and_the_grammar_expects_an_rtt():
    """``rtt_prompt_at`` (a measurement of a record) and ``rtt_prompt`` (a record's earlier tokens and the
    measurement's known fields) give the tokens the pretokenizer wrote up to the RTT, head included (a
    source header and absolute time where a run starts, else the delta); after them only an RTT may come."""
    records = _sample_records()
    checked = 0
    for record in records[:3]:
        parsed = SCHEME.parse_records(record[None])
        rows = SCHEME.decode_record(record)
        for i in range(len(parsed)):
            start, end, rtt_at = int(parsed.start[i]), int(parsed.end[i]), int(parsed.rtt_pos[i])
            want = record[:rtt_at].astype(np.int64)
            assert SCHEME.rtt_prompt_at(record, start, end).tolist() == want.tolist()
            assert SCHEME.rtt_prompt(record[:start], rows[i]).tolist() == want.tolist()
            state = SCHEME.sample_state(want)
            assert (g.allowed(state)[0] == np.isin(np.arange(vocab.VOCAB_SIZE), SCHEME.rtt.grammar_tokens(0))).all()
            checked += 1
    assert checked > 20
    # a field order other than evaluation's is put back into it
    rec = records[0]
    p = SCHEME.parse_records(rec[None])
    start, rtt_at, end = int(p.start[1]), int(p.rtt_pos[1]), int(p.end[1])
    swapped = rec.copy()
    swapped[start:end] = np.concatenate([rec[start : int(p.dst_pos[1])], rec[rtt_at:end], rec[int(p.dst_pos[1]) : rtt_at]])
    assert SCHEME.rtt_prompt_at(swapped, start, end).tolist() == rec[:rtt_at].tolist()
    with pytest.raises(DecodeError):
        SCHEME.rtt_prompt_at(rec, start, rtt_at)  # not a whole measurement
    with pytest.raises(ValueError, match="different families"):
        SCHEME.rtt_prompt([], {"src_addr": "192.0.2.1", "dst_addr": "2001:db8::1", "event_time": 5})


def test_decode_sample_gives_the_measurement_a_prompt_ends_in():
    record = _content(_sample_records()[0])
    rows = SCHEME.decode_record(record)
    p = SCHEME.parse_records(record[None])
    last_rtt = int(p.rtt_pos[-1])
    generated = np.concatenate([record[last_rtt:], [vocab.PAD, vocab.PAD]])
    assert SCHEME.decode_sample(record[:last_rtt], generated) == rows[-1]
    assert SCHEME.current_measurement(record[:last_rtt])[0] in (vocab.SRC4, vocab.SRC6)
    with pytest.raises(g.GrammarError):
        SCHEME.current_measurement(record[5:12])  # no source header
