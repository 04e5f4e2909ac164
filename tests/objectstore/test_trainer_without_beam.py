"""The trainer and the evaluation read an ``s3://`` dataset with Apache Beam unimportable.

Each command runs in a fresh interpreter whose first act is to put an import hook at the front of
``sys.meta_path`` that refuses ``apache_beam`` (and any submodule) with ImportError and writes one line to
stderr for every attempt. The run must succeed and the hook must never have been asked: not merely
"survived without Beam", but "never tried to import it". The store is moto's S3 server, reached through the
standard AWS environment (``AWS_ENDPOINT_URL``, keys, region), as a user would configure the trainer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.objectstore.helpers import upload_tree
from tests.trainer.helpers import MINI, REPO_ROOT, subprocess_env

BLOCKED = "blocked import of apache_beam"

# The program each subprocess runs: the hook, a check that it works, then the module as `python -m` would.
_LAUNCHER = textwrap.dedent(
    f"""
    import runpy, sys

    class NoBeam:
        def find_spec(self, name, path=None, target=None):
            if name == "apache_beam" or name.startswith("apache_beam."):
                sys.stderr.write("{BLOCKED}: " + name + "\\n")
                raise ImportError("apache_beam is made unimportable by this test: " + name)
            return None

    sys.meta_path.insert(0, NoBeam())
    sys.modules.pop("apache_beam", None)
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    """
)


def _run_without_beam(module: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _LAUNCHER, module, *args],
        cwd=REPO_ROOT, env=subprocess_env(**env), capture_output=True, text=True, timeout=600,
    )


def test_the_hook_really_blocks_beam(tmp_path):
    """The launcher's hook refuses Beam (else the tests below would prove nothing)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import apache_beam\n")
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, "probe"], cwd=tmp_path, capture_output=True, text=True,
                          env=subprocess_env(PYTHONPATH=str(tmp_path)), timeout=60)
    assert proc.returncode != 0
    assert f"{BLOCKED}: apache_beam" in proc.stderr and "ImportError" in proc.stderr


def test_the_data_contract_and_storage_import_no_beam():
    """The modules the trainer, the evaluation and ``stats --dataset`` read datasets through import without
    Beam and never try to."""
    modules = ["beam_pipelines.common.storage", "beam_pipelines.common.output", "beam_pipelines.dataset",
               "beam_pipelines.dataset.staging", "beam_pipelines.dataset.verify", "trainer.staging", "trainer.data",
               "trainer.train_stream", "trainer.eval_stream"]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    script = _LAUNCHER.split("module, sys.argv")[0] + code  # the hook, then the imports
    proc = subprocess.run([sys.executable, "-c", script, *modules], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert BLOCKED not in proc.stderr


def test_no_module_reaches_into_beam_privately():
    """No module of the project imports a private name of Apache Beam (``from apache_beam... import _x``,
    or a private module), or reads one of the private attributes storage once used."""
    import ast
    import pathlib

    offenders = []
    for package in ("beam_pipelines", "trainer", "tokenizer"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            text = path.read_text()
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("apache_beam"):
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    if private or any(part.startswith("_") for part in node.module.split(".")):
                        offenders.append(f"{path}: from {node.module} import {', '.join(a.name for a in node.names)}")
                if isinstance(node, ast.Import):
                    offenders += [f"{path}: import {a.name}" for a in node.names
                                  if a.name.startswith("apache_beam") and any(p.startswith("_") for p in a.name.split("."))]
            for attr in ("._pipeline_options", "RuntimeValueProvider.runtime_options", "s3io.S3IO"):
                if attr in text:
                    offenders.append(f"{pathlib.Path(path).relative_to(REPO_ROOT)}: {attr}")
    assert offenders == []


@pytest.mark.slow  # trains a small model and evaluates it, in two fresh interpreters
def test_train_and_evaluate_read_s3_with_beam_unimportable(s3, sample_dataset, tmp_path):
    bucket = s3.new_bucket()
    upload_tree(s3, bucket, "ds", sample_dataset)
    url = f"s3://{bucket}/ds"
    env = {**s3.env(), "PING_LLM_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    workdir = tmp_path / "run"

    train = _run_without_beam("trainer.train", [
        "tiny", f"data_dir={url}", f"workdir={workdir}", "progress=false", *MINI, "steps=4", "batch_size=4",
        "warmup_steps=1", "log_every=1", "checkpoint_every=4", "eval_every=4", "eval_batches=1", "num_workers=0",
    ], env)
    assert train.returncode == 0, train.stderr[-3000:]
    assert BLOCKED not in train.stderr, "the trainer tried to import Beam"
    assert "[staging]" in train.stderr and "copying" in train.stderr  # it did read the store
    assert json.loads(train.stdout.strip().splitlines()[-1])["step"] == 4
    assert "Unclosed" not in train.stderr  # s3fs's HTTP session (aiohttp) is closed cleanly at exit

    evaluate = _run_without_beam("trainer.evaluate", [
        "--workdir", str(workdir), "--data_dir", url, "--split", "test", "--output", str(tmp_path / "report"),
        "--max_measurements", "8", "--samples", "8", "--nll_batches", "1", "--no-progress",
    ], env)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert BLOCKED not in evaluate.stderr, "the evaluation tried to import Beam"
    assert "using the verified local copy" in evaluate.stderr  # the train run's staged copy, found again
    assert (tmp_path / "report" / "report.json").is_file()

    # A fresh cache: the evaluation stages the dataset itself, still without Beam.
    baselines = _run_without_beam("trainer.evaluate", [
        "--baselines_only", "--data_dir", url, "--split", "test", "--output", str(tmp_path / "baselines"),
        "--max_measurements", "8", "--no-progress",
    ], {**env, "PING_LLM_CACHE_DIR": str(tmp_path / "cache2")})
    assert baselines.returncode == 0, baselines.stderr[-3000:]
    assert BLOCKED not in baselines.stderr and "Unclosed" not in baselines.stderr
    assert "copying" in baselines.stderr
