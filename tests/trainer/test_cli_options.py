"""Strict options in the trainer's CLIs: an option or config key a command does not know is one ``error:``
line naming it and the closest known one, exit 2, before anything is read or written."""

from __future__ import annotations

import pytest

from tests.beam_pipelines.common.test_strict_options import snapshot
from trainer import train
from trainer.eval import context_probe, evaluate, predict, tune


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working directory with an (empty) workdir and data folder the commands would read."""
    (tmp_path / "w").mkdir()
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


MISSPELT = {
    "trainer.train": (train.run, ["tiny", "data_dir=d", "workdir=w/run", "--workdr=w/run"],
                      "error: unrecognized option --workdr (did you mean the override workdir=...?)"),
    "trainer.evaluate": (evaluate.run, ["--workdir", "w", "--data_dir", "d", "--ouput", "r"],
                         "error: unrecognized option --ouput (did you mean --output?)"),
    "trainer.predict": (predict.run, ["--workdir", "w", "--src", "10.0.0.1", "--sampels", "3"],
                        "error: unrecognized option --sampels (did you mean --samples?)"),
    "trainer.eval.tune": (tune.run, ["--data_dir", "d", "--rank", "2"],
                          "error: unrecognized option --rank (did you mean --ranks?)"),
    "trainer.eval.context_probe": (context_probe.run, ["--workdir", "w", "--data_dir", "d", "--record", "3"],
                                   "error: unrecognized option --record (did you mean --records?)"),
}


@pytest.mark.parametrize("command", sorted(MISSPELT))
def test_a_misspelt_option_is_one_error_line_and_nothing_is_touched(command, workspace, capsys):
    run, argv, message = MISSPELT[command]
    before = snapshot(workspace)
    assert run(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [message] and captured.out == ""
    assert snapshot(workspace) == before


def test_an_unknown_config_key_names_the_closest_key(workspace, capsys):
    before = snapshot(workspace)
    assert train.run(["tiny", "data_dir=d", "workdir=w/run", "model.widht=64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key(s) model.widht (did you mean model.width?); valid keys: ")
    assert len(err.splitlines()) == 1 and snapshot(workspace) == before


def test_a_bad_value_is_one_error_line_too(workspace, capsys):
    assert evaluate.run(["--workdir", "w", "--data_dir", "d", "--output", "r", "--samples", "many"]) == 2
    assert capsys.readouterr().err.strip() == "error: argument --samples: invalid int value: 'many'"
    assert predict.run(["--src", "10.0.0.1"]) == 2  # --workdir missing
    assert capsys.readouterr().err.strip() == "error: the following arguments are required: --workdir"
    assert not (workspace / "r").exists()


def test_train_help_anywhere_prints_the_usage(capsys):
    assert train.run(["tiny", "--help"]) == 0
    assert "key=value" in capsys.readouterr().out
