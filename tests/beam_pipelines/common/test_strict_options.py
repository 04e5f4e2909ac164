"""Strict options: every job refuses an option it does not know (one ``error:`` line, exit 2) before it
reads or writes anything, and passes on to Beam exactly the options Beam knows."""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from beam_pipelines.common import cli
from beam_pipelines.common.errors import UsageError
from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from beam_pipelines.make_sample import shards as make_sample
from beam_pipelines.pretokenize import options as pretokenize_options
from beam_pipelines.pretokenize import pipeline as pretokenize
from beam_pipelines.stats import pipeline as stats
from beam_pipelines.update import command as update
from tests.data_files import REPO_ROOT, SAMPLE_DIR

IN_MEMORY = "--direct_running_mode=in_memory"


def snapshot(root: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder under ``root``: its bytes (None for a folder) and modification time."""
    found = {}
    for path in sorted(root.rglob("*")):
        data = None if path.is_dir() else path.read_bytes()
        found[str(path.relative_to(root))] = (data, path.stat().st_mtime_ns)
    return found


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working directory with real inputs and the jobs' default outputs already there (``out/`` of
    pretokenize, ``data/sample/`` of make_sample), each holding a file a wrong run would replace."""
    (tmp_path / "in").mkdir()
    table = pq.read_table(sorted(SAMPLE_DIR.glob("*.parquet"))[0]).slice(0, 2000)
    pq.write_table(table, tmp_path / "in" / "pings.parquet")
    (tmp_path / "in" / "pings.json").write_text('[{"type": "ping"}]\n')
    (tmp_path / "incoming").mkdir()
    for default in ("out", "data/sample"):
        (tmp_path / default).mkdir(parents=True)
        (tmp_path / default / "keep.txt").write_text("an earlier result\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# Each command, a command line with one misspelt option (otherwise complete and valid, inputs that exist),
# the misspelling and the option it should suggest.
MISSPELT = {
    "pretokenize": (pretokenize.run, ["--input", "in/pings.parquet", "--ouput", "X", "--overwrite"], "--ouput", "--output"),
    "stats": (stats.run, ["--input", "in/pings.parquet", "--ouput", "X"], "--ouput", "--output"),
    "ingest_atlas": (ingest_atlas.run, ["--input", "in/pings.json", "--ouput", "X"], "--ouput", "--output"),
    "make_sample": (make_sample.run, ["--rows", "100", "--shards", "1", "--sede", "3"], "--sede", "--seed"),
    "update": (update.run, ["--incoming", "incoming", "--parquet", "pq", "--datset", "ds"], "--datset", "--dataset"),
}


def assert_refused(rc: int, capsys, option: str, suggestion: str | None) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert f"unrecognized option {option} " in lines[0], lines[0]
    if suggestion:
        assert lines[0].endswith(f"(did you mean {suggestion}?)"), lines[0]
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("job", sorted(MISSPELT))
def test_a_misspelt_option_is_refused_before_anything_is_read_or_written(job, workspace, capsys):
    run, argv, option, suggestion = MISSPELT[job]
    before = snapshot(workspace)
    assert_refused(run(argv), capsys, option, suggestion)
    assert snapshot(workspace) == before  # the default output untouched, nothing created (no X, pq, ds, lock)


@pytest.mark.parametrize("job", ["pretokenize", "stats", "ingest_atlas", "update"])
def test_a_misspelt_beam_option_is_refused(job, workspace, capsys):
    run, argv, option, _ = MISSPELT[job]
    argv = [a.replace(option, MISSPELT[job][3]) for a in argv]  # now correct: only the Beam option is wrong
    before = snapshot(workspace)
    assert_refused(run([*argv, "--direct_num_worker=1"]), capsys, "--direct_num_worker", "--direct_num_workers")
    assert snapshot(workspace) == before


def test_a_bad_value_of_a_beam_option_is_one_line(workspace, capsys):
    before = snapshot(workspace)
    rc = pretokenize.run(["--input", "in/pings.parquet", "--output", "X", "--direct_num_workers=many"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: argument --direct_num_workers: invalid int value: 'many'"
    assert snapshot(workspace) == before


def test_a_stray_argument_is_refused(workspace, capsys):
    rc = pretokenize.run(["--input", "in/pings.parquet", "--output", "X", "extra"])
    assert rc == 2 and capsys.readouterr().err.strip() == "error: unexpected argument 'extra'"
    assert not os.path.exists("X")


def test_abbreviations_are_refused(workspace, capsys):
    # argparse would read --out as --output; a job knows an option by its full name only, as Beam does.
    before = snapshot(workspace)
    assert_refused(pretokenize.run(["--input", "in/pings.parquet", "--out", "X"]), capsys, "--out", "--output")
    assert snapshot(workspace) == before


def test_beam_options_pass_through_and_work(workspace, monkeypatch):
    from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, S3Options

    from beam_pipelines.common.options import beam_options

    given = ["--direct_num_workers=1", "--s3_endpoint_url", "http://127.0.0.1:9", "--temp_location=/tmp/x", "--no_use_public_ips"]
    options, beam_args = pretokenize_options.parse_args(["--input", "in/pings.parquet", "--output", "X", *given])
    assert beam_args == given and options.output == "X" and options.temp_location == "/tmp/x"
    view = beam_options(beam_args)
    assert view.view_as(DirectOptions).direct_num_workers == 1
    assert view.view_as(S3Options).s3_endpoint_url == "http://127.0.0.1:9"
    assert view.view_as(GoogleCloudOptions).temp_location == "/tmp/x"
    # A run with a Beam option of its own: the same bytes as without it.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1796032800")  # the manifests' creation time
    assert pretokenize.run(["--input", "in/pings.parquet", "--output", "a", IN_MEMORY, "--direct_num_workers=1"]) == 0
    assert pretokenize.run(["--input", "in/pings.parquet", "--output", "b", IN_MEMORY]) == 0
    a, b = snapshot(workspace / "a"), snapshot(workspace / "b")
    assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()} and "manifest.json" in a


def test_runner_options_outside_beams_options_module_pass_when_the_runner_is_installed(workspace, capsys):
    pytest.importorskip("distributed")  # the 'dask' extra
    argv = ["--input", "in/pings.parquet", "--output", "X", "--runner=DaskRunner", "--dask_client_address=127.0.0.1:9"]
    assert pretokenize_options.parse_args(argv)[1] == argv[4:]
    # Without --runner the DaskRunner's module is imported on demand, so its options are known too.
    assert stats.parse_args(["--input", "in/pings.parquet", "--output", "X", "--dask_client_address=h:1"])[1] == ["--dask_client_address=h:1"]
    assert_refused(
        pretokenize.run([*argv[:5], "--dask_client_adress=h:1"]), capsys, "--dask_client_adress", "--dask_client_address"
    )


def test_a_runner_that_cannot_be_imported_is_refused(workspace, capsys):
    before = snapshot(workspace)
    rc = pretokenize.run(["--input", "in/pings.parquet", "--output", "X", "--runner=no_such_package.Runner"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: --runner no_such_package.Runner: no_such_package cannot be imported")
    assert len(err.splitlines()) == 1 and snapshot(workspace) == before


def test_the_dask_runner_without_its_extra_is_refused(workspace, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam.runners.dask.dask_runner", None)  # as if dask were missing
    before = snapshot(workspace)
    rc = pretokenize.run(["--input", "in/pings.parquet", "--output", "X", "--runner=DaskRunner"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: --runner DaskRunner: apache_beam.runners.dask.dask_runner cannot be imported")
    assert err.endswith("is Beam's extra for this runner installed (apache-beam[dask] for the DaskRunner)?")
    assert len(err.splitlines()) == 1 and snapshot(workspace) == before


def test_in_process_runs_without_importing_beam_to_check_options():
    # The job's own options are checked without Beam (pretokenize --in_process and update start fast).
    code = (
        "import sys; from beam_pipelines.pretokenize import pipeline, options as p; "
        "p.parse_args(['--input', 'x.parquet', '--output', 'o', '--in_process', '--split', '80,10,10']); "
        "print('apache_beam' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_cli_refuses_a_misspelt_output_and_leaves_the_default_output_alone(workspace):
    """The issue's case, through ``python -m``: --ouput used to be dropped by Beam with a warning, and the
    job overwrote the default ./out."""
    before = snapshot(workspace)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.pretokenize", "--input", "in/pings.parquet", "--ouput", "X", "--overwrite"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["error: unrecognized option --ouput (did you mean --output?)"]
    assert snapshot(workspace) == before


# --- the parser itself ------------------------------------------------------------------------------


def _parser() -> cli.StrictArgumentParser:
    p = cli.StrictArgumentParser(prog="t")
    p.add_argument("--output", required=True)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input")
    source.add_argument("--dataset")
    p.add_argument("--top", type=int, default=3)
    return p


def test_the_parser_knows_options_added_through_groups_and_takes_negative_numbers():
    p = _parser()
    assert {"--output", "--input", "--dataset", "--top", "-h", "--help"} <= set(p.option_names)
    assert cli.parse_options(p, ["--output", "o", "--dataset", "d", "--top", "-2"]).top == -2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "d", "--ouput", "o"], "unrecognized option --ouput (did you mean --output?)"),  # before "required"
        (["--output", "o", "--zzzzzz"], "unrecognized option --zzzzzz (see --help)"),
        (["--output", "o", "--top", "x"], "argument --top: invalid int value: 'x'"),
        (["--output", "o", "--input", "i", "--dataset", "d"], "argument --dataset: not allowed with argument --input"),
        (["--top", "1"], "the following arguments are required: --output"),
        (["--output", "o", "stray"], "unrecognized arguments: stray"),
    ],
)
def test_every_complaint_is_a_usage_error(argv, message):
    with pytest.raises(UsageError) as raised:
        cli.parse_options(_parser(), argv)
    assert str(raised.value) == message


def test_help_still_prints_and_exits_0(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.parse_options(_parser(), ["--help"])
    assert raised.value.code == 0 and "--output" in capsys.readouterr().out


def test_tokens_after_a_double_dash_are_not_options():
    assert cli.option_names_in(["--a=1", "-5", "-.5", "-b", "--", "--c"]) == ["--a", "-b"]


def test_fields_from_takes_the_same_named_arguments_unless_given():
    @dataclasses.dataclass(frozen=True)
    class Typed:
        a: int
        b: str
        c: int = 7

    parsed = argparse.Namespace(a=1, b="x", d="not a field")
    assert cli.fields_from(Typed, parsed) == Typed(1, "x", 7)
    assert cli.fields_from(Typed, parsed, b="y", c=3) == Typed(1, "y", 3)
    with pytest.raises(TypeError):
        cli.fields_from(Typed, argparse.Namespace(b="x"))  # a field neither given nor parsed


def test_output_modes_are_two_flags_with_the_jobs_help():
    parser = cli.StrictArgumentParser(prog="job")
    cli.add_output_modes(parser, overwrite="replace it", append="add a version")
    assert cli.parse_options(parser, ["--append"]) == argparse.Namespace(overwrite=False, append=True)
    assert "replace it" in parser.format_help() and "add a version" in parser.format_help()
