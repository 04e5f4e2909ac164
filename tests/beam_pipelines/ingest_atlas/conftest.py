"""Fixtures for the ingest tests: small input files made of real result lines, and helpers."""

from __future__ import annotations

import bz2
import gzip
import itertools
import json

import pytest


@pytest.fixture(scope="session")
def real_lines(atlas_file) -> list[bytes]:
    """The first 300 lines of the real file plus every odd-layout line near its end (firmware 0/1, ...)."""
    with gzip.open(atlas_file, "rb") as f:
        head = [line.rstrip(b"\n") for line in itertools.islice(f, 300)]
    with gzip.open(atlas_file, "rb") as f:
        tail = [line.rstrip(b"\n") for line in itertools.islice(f, 488_025, None)]
    return head + tail


@pytest.fixture()
def small_inputs(tmp_path, real_lines):
    """Four files, one of each kind: bz2 and gz JSON lines, a pretty-printed JSON array, plain JSON lines.

    Returns (directory, expected) where expected counts what a run must report.
    """
    src = tmp_path / "in"
    src.mkdir()
    a = real_lines[:100] + [b"", b'{"type":"traceroute","msm_id":5001}', b"{not json"] + real_lines[100:150]
    (src / "a.jsonl.bz2").write_bytes(bz2.compress(b"\n".join(a) + b"\n"))
    (src / "c.jsonl.gz").write_bytes(gzip.compress(b"\n".join(real_lines[150:200])))
    array = [json.loads(line) for line in real_lines[200:230]] + [{"type": "dns"}]
    (src / "b.json").write_text(json.dumps(array, indent=2))
    (src / "d.jsonl").write_bytes(b"\n".join(real_lines[230:]) + b"\n")
    n_real = len(real_lines)
    expected = {
        "lines": n_real + 3 + 1,  # + blank, traceroute, invalid; + the dns element
        "records": n_real + 3,
        "skipped": {"dns": 1, "traceroute": 1},
        "rejected_invalid_json": 1,
    }
    return src, expected
