"""Address parsing: per distinct string, through a per-thread cache that must never mix entries up."""

from __future__ import annotations

import ipaddress
import threading

import numpy as np

from tokenizer.addresses import address_words, parse_address, parse_unique


def _expected(value):
    parsed = parse_address(value)
    if isinstance(parsed, str):
        return {"null": 0, "empty": -1, "malformed": -2}[parsed], bytes(16), (0, 0)
    version, raw = parsed
    return version, raw + bytes(16 - len(raw)), address_words(raw)


def _check(values):
    status, packed, words = parse_unique(values)
    for i, value in enumerate(values):
        version, raw, (hi, lo) = _expected(value)
        assert (int(status[i]), packed[i].tobytes(), int(words[i, 0]), int(words[i, 1])) == (version, raw, hi, lo), value


def _in_fresh_thread(fn):
    """Run ``fn`` in a new thread: its own, empty cache."""
    errors = []

    def target():
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - any failure, an assertion too, goes to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_parse_unique_matches_parse_address():
    _in_fresh_thread(lambda: _check(["192.0.2.1", "2001:db8::1", "", None, "bad", "fe80::1%eth0", "10.0.0.1"]))


def test_repeated_values_do_not_mix_up_the_cache():
    """Two columns' dictionaries share addresses: a value repeated in one call is stored once, and the
    values parsed after it keep their own entries (a repeat once took the next new value's slot)."""

    def scenario():
        shared = [f"192.0.2.{i}" for i in range(1, 6)]
        _check(shared + shared + ["2001:db8::7"])  # repeats, then a new value in the same call
        _check(["198.51.100.1", "198.51.100.2"])  # new values in a later call
        _check(shared + ["2001:db8::7", "198.51.100.1"])  # every earlier value still right
        assert ipaddress.ip_address("192.0.2.5").packed == parse_unique(["192.0.2.5"])[1][0, :4].tobytes()

    _in_fresh_thread(scenario)


def test_repeats_of_a_malformed_value_and_of_null():
    _in_fresh_thread(lambda: _check([None, "bad", None, "bad", "", "", "203.0.113.1"]))
    status, _, words = parse_unique(["203.0.113.1"] * 3)
    assert np.all(status == 4) and len(set(map(tuple, words.tolist()))) == 1
