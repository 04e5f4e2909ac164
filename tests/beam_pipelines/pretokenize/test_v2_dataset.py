"""``pretokenize --tokenizer v2`` on the bundled sample: the manifest names v2, the same rows are rejected as
for v1, every record decodes back to exactly the accepted rows, and the records hold several times v1's
measurements."""

from __future__ import annotations

import ipaddress
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import iter_record_blocks
from beam_pipelines.pretokenize import pipeline as pretokenize
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY, load_manifest
from tokenizer import epoch_seconds, get_scheme


@pytest.fixture(scope="module")
def both(sample_dataset, sample_dataset_v2):
    """The session's v1 and v2 datasets of the bundled sample (tests/conftest.py; the v2 one made without
    ``--input``, which reads the sample); do not modify. (v1 manifest, v2 manifest, v2 directory)."""
    return load_manifest(sample_dataset), load_manifest(sample_dataset_v2), sample_dataset_v2


def test_manifest_names_v2_and_rejects_the_same_rows(both):
    v1, v2, _ = both
    assert v2["tokenizer"] == get_scheme("v2").info() and v1["tokenizer"]["name"] == "v1"
    assert v2["rejected"]["by_reason"] == v1["rejected"]["by_reason"]
    assert v2["rows"] == v1["rows"]
    assert v2["fingerprint"] != v1["fingerprint"]
    for name in ("train", "val", "test"):
        assert v2["splits"][name]["measurements"] == v1["splits"][name]["measurements"]
    per_record = lambda m: sum(s["measurements"] for s in m["splits"].values()) / sum(  # noqa: E731
        s["records"] for s in m["splits"].values())
    assert per_record(v2) >= 3 * per_record(v1)
    pad = sum(s["pad_tokens"] for s in v2["splits"].values()) / (sum(s["records"] for s in v2["splits"].values()) * 1024)
    assert pad < 0.02  # below one measurement per record


@pytest.mark.slow  # decodes every record of the sample and reads every input row: over ~2 s on 2 cores
def test_every_record_decodes_to_the_accepted_rows(both):
    _, manifest, d = both
    scheme = get_scheme(manifest["tokenizer"])
    got = []
    for split in manifest["splits"].values():
        for f in split["files"]:
            for block in iter_record_blocks(os.path.join(d, f["path"]), manifest["seq_len"]):
                for record in block:
                    got += scheme.decode_record(record)
    rejected = set()
    for path in (d / "rejected").glob("*.parquet"):
        rejected |= {(r["source_file"], r["source_row"]) for r in pq.read_table(path).to_pylist()}
    want = []
    for entry in manifest["inputs"]:
        for i, row in enumerate(pq.read_table(entry["path"]).to_pylist()):
            if (entry["path"], i) not in rejected:
                want.append(row)
    assert len(got) == len(want)

    def key(r, decoded):
        if decoded:
            return (r["src_addr"], r["dst_addr"], r["event_time"], r["size"], r["packet_error_count"], r["rtt"])
        return (str(ipaddress.ip_address(r["src_addr"])), str(ipaddress.ip_address(r["dst_addr"])),
                epoch_seconds(r["event_time"]), r["size"], r["packet_error_count"], r["rtt"])

    for g, w in zip(sorted(key(r, True) for r in got), sorted(key(r, False) for r in want)):
        assert g[:5] == w[:5]
        if w[5] == -1.0:
            assert g[5] == -1.0
        else:
            assert abs(g[5] / w[5] - 1) <= 0.001, (g, w)


def test_stats_reads_a_v2_dataset(both, tmp_path):
    import json

    from beam_pipelines.stats import pipeline as stats

    _, manifest, d = both
    assert stats.run(["--dataset", str(d), "--output", str(tmp_path / "r"), "--no_html"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["checks"]["manifest_agrees"] and report["checks"]["malformed_records"] == 0
    assert report["totals"]["measurements"] == sum(s["measurements"] for s in manifest["splits"].values())
    assert report["vocabulary"]["size"] == get_scheme("v2").vocab_size
    assert report["vocabulary"]["time_tokens"] == report["totals"]["measurements"]


def test_an_unknown_scheme_or_a_too_short_record_is_refused(tmp_path, capsys):
    assert pretokenize.run(["--tokenizer", "v9", "--output", str(tmp_path / "a"), IN_MEMORY]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    assert pretokenize.run(["--tokenizer", "v2", "--seq_len", "50", "--output", str(tmp_path / "b"), IN_MEMORY]) == 2
    err = capsys.readouterr().err
    assert "--seq_len 50: must be between 56 (the longest v2 measurement) and 65536" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_stats_refuses_a_dataset_of_an_unknown_scheme(both, tmp_path, capsys):
    import json
    import shutil

    from beam_pipelines.stats import pipeline as stats

    _, _, d = both
    copy = tmp_path / "ds"
    shutil.copytree(d, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tokenizer"]["name"] = "v9"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert stats.run(["--dataset", str(copy), "--output", str(tmp_path / "r"), "--no_html"]) == 2
    assert "unknown tokenizer scheme 'v9'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.json").exists()
