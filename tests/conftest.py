"""Shared fixtures: paths to the repository, the bundled sample and the real RIPE Atlas file.

``pytest -m "not slow"`` is the quick set. A session fixture runs for any selected test that needs it, so
a test whose fixture is expensive (a Beam job on real-size data, a model to compile or train) is marked
``slow`` itself; quick tests use small inputs. CI runs everything.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import pytest

from beam_pipelines.common import tricks
from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from beam_pipelines.pretokenize import pipeline as pretokenize
from tests.data_files import ATLAS_FILE, REPO_ROOT, SAMPLE_DIR, SOURCE_DATE_EPOCH, require_atlas_file

_JAX_CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": None,  # set in pytest_configure
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def pytest_configure(config):
    """One JAX compilation cache for the whole session, in a private folder, so the many short training runs
    (in this process and in the subprocesses that inherit the environment) compile each program once.
    Set before any test module imports JAX, which reads these variables when it is first configured. The
    compiled program is the same either way, so losses do not change (the resume tests compare with ==)."""
    # The trainer's commands keep XLA's freed blocks in one heap (beam_pipelines.common.tricks); the test
    # processes do the same before JAX starts, so the training and evaluation they run in-process allocate as
    # the commands' do (a 16-step `tiny` run spends 13 s of system time on page faults without it).
    tricks.keep_freed_memory_for_xla()
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # the user's own cache: leave it
        return
    config._ping_llm_jax_cache = tempfile.mkdtemp(prefix="ping-llm-test-jax-cache-")
    for key, value in _JAX_CACHE_ENV.items():
        os.environ[key] = value or config._ping_llm_jax_cache


def pytest_unconfigure(config):
    folder = getattr(config, "_ping_llm_jax_cache", None)
    if folder:
        for key in _JAX_CACHE_ENV:
            os.environ.pop(key, None)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def private_checksum_cache(tmp_path_factory):
    """The trainer remembers verified datasets under the user's cache directory; tests keep theirs private
    (subprocesses inherit it). Tests of the cache itself point it elsewhere with monkeypatch."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PING_LLM_CACHE_DIR", str(tmp_path_factory.mktemp("ping-llm-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_dir() -> pathlib.Path:
    assert SAMPLE_DIR.is_dir(), f"bundled sample missing: {SAMPLE_DIR}"
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def atlas_file() -> pathlib.Path:
    """The real RIPE Atlas file; every test that needs it skips, with the reason, where it is absent."""
    return require_atlas_file(ATLAS_FILE)


@pytest.fixture(scope="session")
def atlas_ingested(atlas_file, tmp_path_factory) -> pathlib.Path:
    """``beam_pipelines.ingest_atlas`` on the real RIPE Atlas file with the default options (``--rtt min --src
    from``), made once per test session for the real-file and object-store tests; do not modify."""
    out = tmp_path_factory.mktemp("ingest_min") / "out"
    assert ingest_atlas.run(["--input", str(atlas_file), "--output", str(out), "--direct_running_mode=in_memory"]) == 0
    return out


@pytest.fixture(scope="session")
def sample_dataset(sample_dir, tmp_path_factory) -> pathlib.Path:
    """``beam_pipelines.pretokenize`` on the bundled sample (about 6,400 records of 1024 tokens), made once
    per test session for the pretokenize, stats, trainer and evaluation tests; do not modify. Its manifest's
    ``created`` is fixed (SOURCE_DATE_EPOCH) because the pretokenize tests compare their own runs with it byte
    for byte."""
    out = tmp_path_factory.mktemp("pretokenized") / "sample"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        rc = pretokenize.run(
            ["--input", str(sample_dir / "*.parquet"), "--output", str(out), "--direct_running_mode=in_memory"]
        )
    assert rc == 0
    assert (out / "manifest.json").is_file()
    return out


@pytest.fixture(scope="session")
def sample_dataset_v2(sample_dir, tmp_path_factory) -> pathlib.Path:
    """``beam_pipelines.pretokenize --tokenizer v2`` without ``--input`` (the default: the bundled sample), made
    once per test session for the pretokenize, grammar, trainer and evaluation tests of the v2 scheme; do not
    modify."""
    out = tmp_path_factory.mktemp("pretokenized_v2") / "sample"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        rc = pretokenize.run(["--tokenizer", "v2", "--output", str(out), "--direct_running_mode=in_memory"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(entry["path"] for entry in manifest["inputs"]) == sorted(map(str, sample_dir.glob("*.parquet")))
    return out
