"""``pretokenize --append``: a new version beside the old files, checked record by record; re-append, crash,
concurrency and every refusal (docs/pretokenize.md#appending-a-version).

The inputs come from one generated table sorted by time: the first 10,000 rows are version 1, the next
2,000 the append, and a last 1,500 a third version, so most sources have measurements in every version.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import dataset_versions, read_manifest, select_version
from beam_pipelines.dataset.verify import verify_dataset
from beam_pipelines.make_sample import synth
from beam_pipelines.pretokenize import pipeline as pretokenize
from tests.beam_pipelines.dataset.helpers import edit_manifest, write_tiny_dataset
from tests.beam_pipelines.pretokenize.helpers import (
    IN_MEMORY,
    canonical,
    decoded_records,
    input_rows,
    load_manifest,
    read_split,
    row_key,
    sha256_file,
    tree_digest,
)

SPLITS = ("train", "val", "test")
INTERRUPT = os.path.join(os.path.dirname(__file__), "interrupt.py")


def _run(capsys, *args) -> tuple[int, str, str]:
    code = pretokenize.run([*map(str, args), IN_MEMORY])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Inputs, a pristine version-1 dataset (``v1``) and that dataset with the append done (``ds``)."""
    d = tmp_path_factory.mktemp("append")
    table = synth.generate(13_500, seed=11)
    inputs = d / "in"
    inputs.mkdir()
    old, new, more = inputs / "a-old.parquet", inputs / "b-new.parquet", d / "c-more.parquet"
    pq.write_table(table.slice(0, 10_000), old, row_group_size=2_500)
    pq.write_table(table.slice(10_000, 2_000), new, row_group_size=1_000)
    pq.write_table(table.slice(12_000), more)
    v1 = d / "v1"
    # Small buckets: several record files per split in version 1, so file order and names are exercised.
    assert pretokenize.run(["--input", str(old), "--output", str(v1), "--bucket_rows", "4000", IN_MEMORY]) == 0
    ds = d / "ds"
    shutil.copytree(v1, ds)
    # The glob matches the old input too: it is skipped by its sha256.
    assert pretokenize.run(["--input", str(inputs / "*.parquet"), "--output", str(ds), "--append", IN_MEMORY]) == 0
    return types.SimpleNamespace(
        dir=d, old=old, new=new, more=more, glob=inputs / "*.parquet", v1=v1, ds=ds, v1_digest=tree_digest(v1)
    )


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _check_rows(ds, inputs):
    """Every valid row of ``inputs`` exactly once in the records of all versions (multiset equality of the
    decoded measurements with an independent reading of the input rows), and the rejected ones kept."""
    manifest = load_manifest(ds)
    rows = input_rows(inputs)
    rejected = [r for p in manifest["rejected"]["files"] for r in pq.read_table(os.path.join(ds, p)).to_pylist()]
    rejected_at = {(r["source_file"], r["source_row"]) for r in rejected}
    assert len(rejected_at) == len(rejected) == manifest["rejected"]["total"]
    kept = [
        row_key(dict(r, src_addr=canonical(r["src_addr"]), dst_addr=canonical(r["dst_addr"])))
        for r in rows
        if (r["source_file"], r["source_row"]) not in rejected_at
    ]
    decoded = {s: decoded_records(read_split(ds, manifest, s)) for s in SPLITS}
    got = [row_key(m) for s in SPLITS for rec in decoded[s] for m in rec]
    assert len(kept) + len(rejected) == len(rows) == manifest["rows"]["read"]
    assert collections.Counter(got) == collections.Counter(kept)
    return manifest, decoded


@pytest.mark.slow
def test_append_adds_every_new_row_once_and_leaves_version_1_alone(data):
    manifest, decoded = _check_rows(data.ds, [data.old, data.new])
    v1 = load_manifest(data.v1)

    # Version 1's files: the same names and the same bytes, still listed first.
    for name, digest in data.v1_digest.items():
        if name != "manifest.json":
            assert sha256_file(data.ds / name) == digest, name
    for s in SPLITS:
        old = [f["path"] for f in v1["splits"][s]["files"]]
        assert [f["path"] for f in manifest["splits"][s]["files"]][: len(old)] == old
    assert dataset_versions(manifest)[0] == dataset_versions(v1)[0]
    # Readers bound to version 1 see exactly version 1.
    as_v1 = select_version(manifest, 1)
    for key in ("seq_len", "tokenizer", "fingerprint", "rows", "rejected", "inputs", "options"):
        assert as_v1[key] == v1[key], key
    assert {s: (as_v1["splits"][s]["records"], as_v1["splits"][s]["files"]) for s in SPLITS} == {
        s: (v1["splits"][s]["records"], v1["splits"][s]["files"]) for s in SPLITS
    }

    # Version 2: only the new input (the old one skipped by sha256), new files under new names, its own
    # rejected rows and counts, its fingerprint chained on version 1's.
    v2 = dataset_versions(manifest)[1]
    assert manifest["version"] == 2 and v2["version"] == 2 and v2["created"] == "2026-11-30T10:00:00Z"
    assert [i["path"] for i in v2["inputs"]] == [str(data.new)]
    assert v2["rows"]["read"] == 2_000 and v2["options"]["bucket_rows"] == 4_000  # inherited
    assert v2["fingerprint"] == manifest["fingerprint"] == manifest_lib.version_fingerprint(
        v1["fingerprint"], v2["inputs"], v2["options"]
    )
    new_files = [f["path"] for s in SPLITS for f in v2["splits"][s]["files"]] + v2["rejected"]["files"]
    assert new_files and all("-v00002-" in p for p in new_files)
    rejected_v2 = pq.read_table(data.ds / v2["rejected"]["files"][0]).to_pylist()
    assert {r["source_file"] for r in rejected_v2} == {str(data.new)}
    assert len(rejected_v2) == v2["rejected"]["total"] == v2["rows"]["rejected"] > 0
    assert manifest["rows"]["read"] == 12_000
    # Per-version counts add up to the totals; the records agree with the manifest.
    for s in SPLITS:
        for key in ("records", "measurements", "tokens", "pad_tokens"):
            assert manifest["splits"][s][key] == sum(v["splits"][s][key] for v in dataset_versions(manifest))
    verify_dataset(str(data.ds), read_manifest(str(data.ds)), checksums=True)
    on_disk = {os.path.relpath(os.path.join(r, n), data.ds) for r, _, ns in os.walk(data.ds) for n in ns}
    listed = {f["path"] for s in SPLITS for f in manifest["splits"][s]["files"]} | set(manifest["rejected"]["files"])
    assert on_disk == listed | {"manifest.json"}  # no lock, no scratch, nothing unlisted

    # Sources: shared between the versions, and each in one split across them (split = hash of the source).
    split_of = collections.defaultdict(set)
    for s in SPLITS:
        for rec in decoded[s]:
            for m in rec:
                split_of[m["src_addr"]].add(s)
    assert all(len(splits) == 1 for splits in split_of.values())
    # Version 2's records hold exactly the new input's valid rows: a source's new measurements start new
    # records, none is packed into a version-1 record.
    rejected_at = {(r["source_file"], r["source_row"]) for r in rejected_v2}
    want = [
        row_key(dict(r, src_addr=canonical(r["src_addr"]), dst_addr=canonical(r["dst_addr"])))
        for r in input_rows([data.new])
        if (r["source_file"], r["source_row"]) not in rejected_at
    ]
    only_v2 = {"seq_len": manifest["seq_len"], "splits": v2["splits"]}
    decoded_v2 = [m for s in SPLITS for rec in decoded_records(read_split(data.ds, only_v2, s)) for m in rec]
    assert collections.Counter(row_key(m) for m in decoded_v2) == collections.Counter(want)
    first = {m["src_addr"] for s in SPLITS for rec in decoded_records(read_split(data.v1, v1, s)) for m in rec}
    assert len(first & {m["src_addr"] for m in decoded_v2}) >= 10, "the data should share sources between versions"


@pytest.mark.slow
def test_append_again_is_a_no_op(data, tmp_path, capsys):
    ds = _copy(data.ds, tmp_path / "ds")
    before = tree_digest(ds)
    manifest_bytes = (ds / "manifest.json").read_bytes()
    code, out, err = _run(capsys, "--input", data.glob, "--output", ds, "--append")
    assert code == 0
    assert "already holds every input (version 2); nothing to do" in out
    assert "skipping 2 input file(s) already in the dataset" in err
    assert (ds / "manifest.json").read_bytes() == manifest_bytes and tree_digest(ds) == before
    # Without --append the same inputs make another dataset (version 1 of all of them): refused, with a hint.
    code, _, err = _run(capsys, "--input", data.glob, "--output", ds)
    assert code == 2 and "holds a different dataset" in err and "or --append to add the inputs" in err
    assert tree_digest(ds) == before


@pytest.mark.slow
@pytest.mark.parametrize("point", ["kill-after-records", "kill-before-manifest"])
def test_sigkill_during_an_append_then_rerun_equals_a_clean_append(data, tmp_path, capsys, point):
    ds = _copy(data.v1, tmp_path / "ds")
    args = ["--input", str(data.glob), "--output", str(ds), "--append", IN_MEMORY]
    proc = subprocess.run([sys.executable, INTERRUPT, point, *args], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    if point == "kill-before-manifest":  # every new file was at its final name, unlisted
        assert list((ds / "train").glob("*-v00002-*"))
    # Still version 1, complete and verified; the lock of the dead run is left behind.
    assert (ds / "manifest.json").read_bytes() == (data.v1 / "manifest.json").read_bytes()
    verify_dataset(str(ds), read_manifest(str(ds)), checksums=True)
    assert (ds / "_writer.lock").exists()

    code, _, err = _run(capsys, *args[:-1])
    assert code == 0, err
    assert "note: took over the writer lock of a run that is gone" in err
    if point == "kill-before-manifest":
        assert "note: removed" in err and "left by an interrupted run" in err
    # Byte-identical to the append that was never interrupted (created is fixed by SOURCE_DATE_EPOCH).
    assert tree_digest(ds) == tree_digest(data.ds)


@pytest.mark.slow
def test_two_appends_at_once_one_is_refused_and_nothing_is_lost(data, tmp_path, capsys):
    ds = _copy(data.v1, tmp_path / "ds")
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, INTERRUPT, f"wait-before-manifest:{ready}:{go}", "--input", str(data.glob), "--output",
         str(ds), "--append", IN_MEMORY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), first.communicate()
        # The second append is refused at once by the writer lock, and touches nothing.
        started = time.monotonic()
        code, _, err = _run(capsys, "--input", data.more, "--output", ds, "--append")
        assert code == 2 and time.monotonic() - started < 5
        assert f"{ds} is being written by another run (pid {first.pid} on " in err
    finally:
        go.touch()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert load_manifest(ds)["version"] == 2
    # Run again, the refused append adds its rows as version 3: nothing was lost.
    code, _, err = _run(capsys, "--input", data.more, "--output", ds, "--append")
    assert code == 0, err
    manifest, _ = _check_rows(ds, [data.old, data.new, data.more])
    assert manifest["version"] == 3 and manifest["rows"]["read"] == 13_500
    assert [v["rows"]["read"] for v in dataset_versions(manifest)] == [10_000, 2_000, 1_500]


@pytest.mark.slow
def test_append_to_a_manifest_written_before_versions(data, tmp_path, capsys):
    ds = _copy(data.v1, tmp_path / "ds")
    edit_manifest(ds, lambda m: [m.pop("version"), m.pop("versions")])  # what the code before versions wrote
    code, _, err = _run(capsys, "--input", data.new, "--output", ds, "--append")
    assert code == 0, err
    manifest = read_manifest(str(ds))
    first, second = dataset_versions(manifest)
    assert first["created"] is None and first["fingerprint"] == load_manifest(data.v1)["fingerprint"]
    assert second["fingerprint"] == load_manifest(data.ds)["fingerprint"]  # same chain as the new format's
    assert {s: manifest["splits"][s]["files"] for s in SPLITS} == {s: load_manifest(data.ds)["splits"][s]["files"] for s in SPLITS}


@pytest.mark.slow
def test_time_split_append_uses_the_dataset_cut_points(data, tmp_path, capsys):
    ds = tmp_path / "ds"
    code, _, err = _run(capsys, "--input", data.old, "--output", ds, "--split_by", "time")
    assert code == 0, err
    cuts = load_manifest(ds)["options"]["time_cut_points"]
    code, _, err = _run(capsys, "--input", data.new, "--output", ds, "--append")
    assert code == 0, err
    manifest = load_manifest(ds)
    v2 = dataset_versions(manifest)[1]
    assert v2["options"]["split_by"] == "time" and v2["options"]["time_cut_points"] == cuts
    # A row's split is a function of its time: every measurement lies within its split's cut points, so
    # the later rows of version 2 all land in test.
    bounds = {"train": (-(2**62), cuts[0]), "val": (cuts[0], cuts[1]), "test": (cuts[1], 2**62)}
    for s in SPLITS:
        for rec in decoded_records(read_split(ds, manifest, s)):
            for m in rec:
                assert bounds[s][0] <= m["event_time_s"] < bounds[s][1]
    assert v2["splits"]["test"]["measurements"] == v2["rows"]["accepted"]
    assert v2["splits"]["train"]["records"] == v2["splits"]["val"]["records"] == 0


@pytest.mark.slow
def test_stats_reports_a_version(data, tmp_path, capsys):
    from beam_pipelines.stats import pipeline as stats

    reports = {}
    for name, args in (("v1", ["--dataset", data.v1]), ("at1", ["--dataset", data.ds, "--version", "1"]),
                       ("latest", ["--dataset", data.ds])):  # fmt: skip
        assert stats.run([*map(str, args), "--output", str(tmp_path / name), "--no_html"]) == 0
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    capsys.readouterr()
    at1, v1, latest = reports["at1"], reports["v1"], reports["latest"]
    assert at1["version"] == 1 and latest["version"] == 2
    assert {k: v for k, v in at1.items() if k != "dataset"} == {k: v for k, v in v1.items() if k != "dataset"}
    # The latest version's sources are counted per version in the manifest; the check accounts for that.
    assert latest["checks"]["manifest_agrees"], latest["checks"]["mismatches"]
    assert latest["totals"]["measurements"] == load_manifest(data.ds)["rows"]["accepted"]
    assert latest["manifest"]["fingerprint"] == load_manifest(data.ds)["fingerprint"]


# --- refusals (no pipeline runs: quick) ------------------------------------------------------------


def test_append_without_a_dataset_is_refused(tmp_path, capsys):
    for out in (tmp_path / "nothing", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        code, _, err = _run(capsys, "--input", tmp_path / "x.parquet", "--output", out, "--append")
        assert code == 2
        assert f"error: {out} holds no dataset to append to; run without --append to create it" in err
    assert not (tmp_path / "nothing").exists() and os.listdir(tmp_path / "empty") == []


def test_append_with_overwrite_is_refused(tmp_path, capsys):
    code, _, err = _run(capsys, "--output", tmp_path / "ds", "--append", "--overwrite")
    assert code == 2 and "--append and --overwrite cannot be combined" in err
    assert not (tmp_path / "ds").exists()


@pytest.fixture
def tiny(tmp_path):
    """A hand-made dataset (seq_len 8) with pretokenize's shaping options in its manifest."""
    root = tmp_path / "ds"
    write_tiny_dataset(str(root))
    options = {"seq_len": 8, "split": [0.8, 0.1, 0.1], "split_by": "src", "compression": "zstd:3",
               "bucket_rows": 1000, "num_buckets": 1}  # fmt: skip
    edit_manifest(root, lambda m: m.update(options=options, inputs=[]))
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seq_len", "512"], "--seq_len 512 differs from the dataset's seq_len 8 in {ds}"),
        (["--split", "70,20,10"], "--split [0.7, 0.2, 0.1] differs from the dataset's split [0.8, 0.1, 0.1] in {ds}"),
        (["--split_by", "time"], "--split_by time differs from the dataset's split_by src in {ds}"),
        (["--compression", "zstd:9"], "--compression zstd:9 differs from the dataset's compression zstd:3 in {ds}"),
        (["--bucket_rows", "5"], "--bucket_rows 5 differs from the dataset's bucket_rows 1000 in {ds}"),
    ],
)
def test_a_shaping_option_that_differs_is_refused_naming_both_values(tiny, capsys, args, message):
    before = tree_digest(tiny)
    code, _, err = _run(capsys, "--input", tiny / "x.parquet", "--output", tiny, "--append", *args)
    assert code == 2
    assert message.format(ds=tiny) in err
    assert tree_digest(tiny) == before


def test_the_same_options_given_again_are_accepted(tiny, capsys):
    # Given values equal to the dataset's pass the check (the run then fails on the missing input).
    code, _, err = _run(capsys, "--input", tiny / "x.parquet", "--output", tiny, "--append", "--split_by", "src",
                        "--split", "80,10,10", "--compression", "zstd:3", "--bucket_rows", "1000")  # fmt: skip
    assert code == 2 and "matches no file" in err


def test_another_tokenizer_is_refused(tiny, capsys):
    edit_manifest(tiny, lambda m: m["tokenizer"].update(version=2))
    code, _, err = _run(capsys, "--input", tiny / "x.parquet", "--output", tiny, "--append")
    assert code == 2
    assert f"{tiny} was written with tokenizer" in err and "'version': 2" in err and "'version': 1" in err


def test_stats_refuses_an_unknown_version(tiny, tmp_path, capsys):
    from beam_pipelines.stats import pipeline as stats

    code = stats.run(["--dataset", str(tiny), "--version", "3", "--output", str(tmp_path / "r"), "--no_html"])
    assert code == 2
    assert f"error: {tiny}: no version 3; it has version 1" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.json").exists()
    code = stats.run(["--input", str(tiny), "--version", "1", "--output", str(tmp_path / "r")])
    assert code == 2 and "--version applies to --dataset only" in capsys.readouterr().err


@pytest.mark.slow
def test_without_source_date_epoch_only_created_differs(data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    manifests = []
    for name in ("a", "b"):
        before = time.time()
        assert pretokenize.run(["--input", str(data.new), "--output", str(tmp_path / name), IN_MEMORY]) == 0
        after = time.time()
        manifest = load_manifest(tmp_path / name)
        created = manifest["versions"][0]["created"]
        stamp = time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone  # UTC -> epoch
        assert int(before) - 1 <= stamp <= after + 1  # the clock's time, not SOURCE_DATE_EPOCH's
        manifest["versions"][0]["created"] = None
        manifests.append(manifest)
    capsys.readouterr()
    assert manifests[0] == manifests[1]
    # The records are the same bytes: created is in the manifest only.
    digests = [{k: v for k, v in tree_digest(tmp_path / n).items() if k != "manifest.json"} for n in ("a", "b")]
    assert digests[0] == digests[1]


def test_small_inputs_run_the_direct_runner_in_one_process_unless_a_runner_option_is_given():
    small = pretokenize.SMALL_INPUT_ROWS - 1
    one_process = "--direct_running_mode=in_memory"
    assert pretokenize.runner_args([], small) == [one_process]
    assert pretokenize.runner_args(["--temp_location=/t"], small) == ["--temp_location=/t", one_process]
    # The switch to worker processes follows the cores: 2M rows on 2, 16/15 of 1M on 16, never on one.
    assert pretokenize.runner_args([], 1_999_999, cores=2) == [one_process]
    assert pretokenize.runner_args([], 2_000_000, cores=2) == []  # common.options: worker processes
    assert pretokenize.runner_args([], 1_066_666, cores=16) == [one_process]
    assert pretokenize.runner_args([], 1_066_667, cores=16) == []
    assert pretokenize.runner_args([], 10**9, cores=1) == [one_process]
    for given in (["--direct_num_workers=2"], ["--direct_running_mode=multi_processing"], ["--runner=DaskRunner"],
                  ["--runner", "DirectRunner"]):  # fmt: skip
        assert pretokenize.runner_args(given, small) == given
        assert pretokenize.runner_args(given, small, cores=1) == given


@pytest.mark.parametrize("given", ["--runner=DaskRunner", "--direct_num_workers=2", "--direct_running_mode=in_memory"])
def test_in_process_with_a_runner_option_is_refused(tmp_path, capsys, given):
    code = pretokenize.run(["--input", str(tmp_path / "x.parquet"), "--output", str(tmp_path / "out"), "--in_process", given])
    err = capsys.readouterr().err
    assert code == 2
    assert "--in_process runs without Apache Beam; it cannot be combined with " + given in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_in_process_without_beam_gives_the_pipelines_bytes(data, tmp_path):
    """A plain run and an append with --in_process (the stages in this process, Beam never imported) write
    exactly what the Beam pipeline wrote for the fixture."""
    script = (
        "import sys\n"
        "from beam_pipelines.pretokenize import pipeline\n"
        "code = pipeline.run(sys.argv[1:])\n"
        "assert 'apache_beam' not in sys.modules, 'Beam was imported'\n"
        "sys.exit(code)\n"
    )
    ds = tmp_path / "ds"
    for args in (["--input", data.old, "--bucket_rows", "4000", "--in_process"],
                 ["--input", data.glob, "--append", "--in_process"]):  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", script, *map(str, args), "--output", str(ds)],
                              check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "in this process, without Beam (--in_process)" in proc.stderr
    assert tree_digest(ds) == tree_digest(data.ds)


@pytest.mark.slow
def test_an_append_with_no_encodable_row_adds_no_version(data, tmp_path, capsys):
    ds = _copy(data.v1, tmp_path / "ds")
    bad = tmp_path / "bad.parquet"
    table = pq.read_table(data.new).slice(0, 50)
    pq.write_table(table.set_column(table.schema.get_field_index("src_addr"), "src_addr",
                                    pa.array(["not-an-address"] * 50)), bad)  # fmt: skip
    manifest_bytes = (ds / "manifest.json").read_bytes()
    code, _, err = _run(capsys, "--input", bad, "--output", ds, "--append")
    assert code == 1
    assert "no row could be encoded: all 50 rows were rejected" in err and "still holds version 1, unchanged" in err
    assert (ds / "manifest.json").read_bytes() == manifest_bytes
    left = sorted(p.name for p in (ds / "rejected").iterdir())
    assert "rejected-v00002-00000-of-00001.parquet" in left  # the rows and their reasons, to read
    # The next append removes them (not in the manifest) and adds its own rows as version 2.
    code, _, err = _run(capsys, "--input", data.new, "--output", ds, "--append")
    assert code == 0, err
    assert "note: removed 1 file(s) left by an interrupted run" in err
    assert tree_digest(ds) == tree_digest(data.ds)


def test_append_refuses_another_scheme_and_keeps_the_datasets(tmp_path, capsys):
    """A v2 dataset: --append without --tokenizer takes v2; --tokenizer v1 is refused, nothing written."""
    table = synth.generate(3_000, seed=5)
    pq.write_table(table.slice(0, 2_000), tmp_path / "a.parquet")
    pq.write_table(table.slice(2_000), tmp_path / "b.parquet")
    out = tmp_path / "ds"
    code, _, err = _run(capsys, "--tokenizer", "v2", "--input", tmp_path / "a.parquet", "--output", out)
    assert code == 0, err
    before = tree_digest(out)
    code, _, err = _run(capsys, "--tokenizer", "v1", "--input", tmp_path / "*.parquet", "--output", out, "--append")
    assert code == 2
    assert f"--tokenizer v1 differs from the dataset's tokenizer v2 in {out}" in err
    assert tree_digest(out) == before
    code, _, err = _run(capsys, "--input", tmp_path / "*.parquet", "--output", out, "--append")
    assert code == 0, err
    manifest = load_manifest(out)
    assert manifest["tokenizer"]["name"] == "v2" and manifest["version"] == 2
    assert manifest["rows"]["read"] == 3_000 and manifest["rows"]["accepted"] + manifest["rows"]["rejected"] == 3_000
