"""Shared Beam options: the local default runner never tries Prism and keeps the DirectRunner's modes."""

from __future__ import annotations

import tempfile

import apache_beam as beam
import pytest
from apache_beam.runners.portability import prism_runner
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.common import options


@pytest.fixture
def no_prism(monkeypatch):
    """Fail loudly if anything starts the Prism runner (it downloads a binary from GitHub)."""
    started = []

    def refuse(self, *args, **kwargs):
        started.append(True)
        raise AssertionError("the Prism runner was started")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    return started


def test_defaults_pick_the_local_runner_in_multi_process_mode():
    view = options.beam_options([]).get_all_options()
    assert view["runner"] == options.LOCAL_RUNNER
    assert view["direct_running_mode"] == "multi_processing" and view["direct_num_workers"] == 0
    view = options.beam_options(["--direct_running_mode=in_memory"]).get_all_options()
    assert view["runner"] == options.LOCAL_RUNNER and view["direct_running_mode"] == "in_memory"
    # An explicit runner is the user's choice, Beam's DirectRunner included.
    assert options.beam_options(["--runner=DirectRunner"]).get_all_options()["runner"] == "DirectRunner"
    assert options.beam_options(["--runner", "DaskRunner"]).get_all_options()["runner"].endswith("DaskRunner")


@pytest.mark.parametrize("mode", ["in_memory", pytest.param("multi_processing", marks=pytest.mark.slow)])
def test_local_runner_runs_a_pipeline_without_prism_or_temp_folders(mode, no_prism, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # every temporary folder Beam makes lands here
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    args = [f"--direct_running_mode={mode}", "--direct_num_workers=2"]
    with beam.Pipeline(options=options.beam_options(args)) as p:
        out = p | beam.Create(range(100)) | beam.Map(lambda x: x * x) | beam.CombineGlobally(sum)
        assert_that(out, equal_to([sum(x * x for x in range(100))]))
    assert not no_prism
    assert not list(tmp_path.glob("beam-temp*"))


def test_beam_direct_runner_would_try_prism_first(no_prism, monkeypatch):
    """Why LocalRunner exists: Beam's DirectRunner starts Prism before anything else (and falls back when
    it fails). If this ever stops holding, LocalRunner can go."""
    args = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
    with beam.Pipeline(options=options.beam_options(args)) as p:
        assert_that(p | beam.Create([1, 2]), equal_to([1, 2]))
    assert no_prism == [True]
