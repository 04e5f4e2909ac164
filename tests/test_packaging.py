"""The wheel built from the repository holds every module of the three packages, sub-packages included.

Cluster workers (Dataflow's ``--extra_package``, Dask workers) get the code as this wheel; the editable
install the tests run against would not notice a sub-package that ``pyproject.toml`` leaves out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata

import pytest

PACKAGES = ("tokenizer", "beam_pipelines", "trainer")


def source_modules(root) -> set[str]:
    """Every ``.py`` file of the three packages in the source tree, as wheel paths (``a/b/c.py``)."""
    found = set()
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            rel = os.path.relpath(folder, root).replace(os.sep, "/")
            found.update(f"{rel}/{name}" for name in files if name.endswith(".py"))
    return found


def _isolation_flags() -> list[str]:
    # The installed setuptools builds the wheel offline when it is recent enough for pyproject.toml
    # (a PEP 639 license string needs setuptools 77); otherwise pip fetches the build requirements.
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 77 else []


@pytest.fixture(scope="module")
def wheel_names(repo_root, tmp_path_factory) -> set[str]:
    # Built from a copy of the project files (top-level files and the three packages), not in the
    # checkout: an in-tree build writes build/ and *.egg-info there, and a stale build/lib could leak
    # old modules into the wheel.
    src = tmp_path_factory.mktemp("wheel_src") / "project"
    src.mkdir()
    for entry in os.scandir(repo_root):
        if entry.is_file():
            shutil.copy2(entry.path, src / entry.name)
    for package in PACKAGES:
        shutil.copytree(repo_root / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", *_isolation_flags(), "-q", "-w", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as z:
        return set(z.namelist())


@pytest.mark.slow
def test_the_wheel_holds_every_module_of_the_three_packages(repo_root, wheel_names):
    in_source = source_modules(repo_root)
    assert "beam_pipelines/pretokenize/__main__.py" in in_source  # the walk does see sub-packages
    in_wheel = {n for n in wheel_names if n.endswith(".py")}
    assert sorted(in_source - in_wheel) == []
    assert sorted(in_wheel - in_source) == []  # nothing stale or foreign (tests, build leftovers)
    for name in ("beam_pipelines/pretokenize/__main__.py", "beam_pipelines/dataset/manifest.py", "trainer/eval/evaluate.py"):
        assert name in wheel_names


@pytest.mark.slow
def test_the_wheel_holds_only_the_three_packages(wheel_names):
    top = {n.split("/")[0] for n in wheel_names}
    assert {t for t in top if not t.endswith(".dist-info")} == set(PACKAGES)
