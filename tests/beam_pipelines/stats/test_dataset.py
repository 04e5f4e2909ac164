"""The --dataset report against a decode of every record, and its clear errors on damaged datasets."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from beam_pipelines.common.files import sha256_file
from beam_pipelines.stats import pipeline as stats
from beam_pipelines.stats.dataset import summarize_records
from tokenizer import PAD


def run_report(args, out) -> tuple[int, dict | None]:
    rc = stats.run([*args, "--output", str(out), "--no_html"])
    path = os.path.join(out, "report.json")
    if not os.path.exists(path):
        return rc, None
    with open(path) as f:
        return rc, json.load(f)


def test_dataset_report_matches_a_decode_of_every_record(hand_dataset, tmp_path, helpers):
    rc, report = run_report(["--dataset", hand_dataset], tmp_path)
    assert rc == 0
    helpers.check_dataset_report(report, hand_dataset)
    assert report["rejected"]["total"] > 0  # dirty rows were rejected by the packer's tokenizer
    text = (tmp_path / "report.md").read_text()
    assert "| train |" in text and "Manifest agrees | yes" in text


@pytest.mark.slow
def test_dataset_report_in_worker_processes(hand_dataset, tmp_path):
    rc, parallel = run_report(["--dataset", hand_dataset, "--workers", "2"], tmp_path / "a")
    assert rc == 0
    rc, serial = run_report(["--dataset", hand_dataset, "--workers", "1"], tmp_path / "b")
    assert parallel == serial


def test_summarize_records_by_hand():
    # Two records of seq_len 12: a 45-token measurement does not fit, so build from role/byte ids by hand.
    rec = np.full((2, 12), PAD, np.uint16)
    rec[0, :5] = [0, 1, 3, 10, 11]  # a (truncated) measurement start with an IPv4 source block 0.1.?.?
    rec[1, :] = PAD
    s = summarize_records(rec)
    assert (s.records, s.measurements, s.tokens, s.pad_tokens) == (2, 1, 5, 19)
    assert s.measurements_per_record.tolist() == [1, 1]
    assert s.malformed_records == 0
    bad = rec.copy()
    bad[1, 3] = 12  # a token after PAD
    assert summarize_records(bad).malformed_records == 1


@pytest.fixture
def damaged(hand_dataset, tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(hand_dataset, d)
    with open(d / "manifest.json") as f:
        manifest = json.load(f)
    return d, manifest


def _save(d, manifest):
    with open(d / "manifest.json", "w") as f:
        json.dump(manifest, f)


def _expect_error(d, tmp_path, capsys, *needles):
    out = tmp_path / "report"
    rc, report = run_report(["--dataset", str(d)], out)
    err = capsys.readouterr().err
    assert rc == 2
    assert report is None and not os.path.exists(out / "report.md")
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err


def test_no_manifest(damaged, tmp_path, capsys):
    d, _ = damaged
    os.remove(d / "manifest.json")
    _expect_error(d, tmp_path, capsys, "manifest.json", str(d))


def test_unreadable_manifest(damaged, tmp_path, capsys):
    d, _ = damaged
    (d / "manifest.json").write_text("{not json")
    _expect_error(d, tmp_path, capsys, "manifest.json")


def test_record_count_disagrees_with_manifest(damaged, tmp_path, capsys):
    d, manifest = damaged
    entry = manifest["splits"]["val"]["files"][0]
    entry["records"] += 1
    _save(d, manifest)
    _expect_error(d, tmp_path, capsys, entry["path"], "records", f"says {entry['records']:,}")


def test_missing_file(damaged, tmp_path, capsys):
    d, manifest = damaged
    path = manifest["splits"]["train"]["files"][1]["path"]
    os.remove(d / path)
    _expect_error(d, tmp_path, capsys, path, "missing")


def test_changed_file(damaged, tmp_path, capsys):
    d, manifest = damaged
    path = manifest["splits"]["test"]["files"][0]["path"]
    data = bytearray((d / path).read_bytes())
    data[-100] ^= 0xFF
    (d / path).write_bytes(bytes(data))
    _expect_error(d, tmp_path, capsys, path, "sha256")


def test_record_of_wrong_length(damaged, tmp_path, capsys):
    d, manifest = damaged
    entry = manifest["splits"]["test"]["files"][0]
    writer = ArrayRecordWriter(str(d / entry["path"]), "group_size:1")
    for _ in range(entry["records"]):
        writer.write(b"\x00\x00" * 10)
    writer.close()
    # The manifest agrees with the new file (size, sha256, count): only the records' length is wrong.
    entry["sha256"] = sha256_file(str(d / entry["path"]))
    entry["bytes"] = os.path.getsize(d / entry["path"])
    _save(d, manifest)
    _expect_error(d, tmp_path, capsys, entry["path"], "record 0 has 20 bytes")


def test_split_totals_that_disagree_are_reported(damaged, tmp_path):
    d, manifest = damaged
    manifest["splits"]["train"]["measurements"] += 1
    _save(d, manifest)
    rc, report = run_report(["--dataset", str(d)], tmp_path / "r")
    assert rc == 0 and not report["checks"]["manifest_agrees"]
    assert "splits.train.measurements" in report["checks"]["mismatches"][0]
