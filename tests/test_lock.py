"""The lock (``constraints.txt``) and the declared dependencies agree with each other, with the code's imports
and with the environment the tests run in (docs/development.md, "Locked installs").

The README's commands and ``.ci/run`` install through the lock, so in CI every locked package present here
must carry exactly its locked version: a drifting install fails here, not somewhere deep in a Beam test.
"""

from __future__ import annotations

import ast
import pathlib
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tokenizer", "beam_pipelines", "trainer")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _declared() -> dict[str, list[Requirement]]:
    """Every requirement of the package and of each extra, by where it is declared (``""``: the package)."""
    project = _pyproject()["project"]
    out = {"": [Requirement(r) for r in project["dependencies"]]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        out[extra] = [Requirement(r) for r in reqs]
    return out


def parse_lock(text: str) -> dict[str, Version]:
    """``name==version`` lines (comments and blank lines skipped) by canonical name; anything else is an error."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"constraints.txt line {number}: not a pin: {raw!r}")
        key = canonicalize_name(name.strip())
        if key in pins:
            raise ValueError(f"constraints.txt line {number}: {name.strip()} pinned twice")
        pins[key] = Version(version.strip())
    return pins


@pytest.fixture(scope="module")
def lock() -> dict[str, Version]:
    return parse_lock((ROOT / "constraints.txt").read_text())


def test_parse_lock_rejects_what_is_not_a_pin():
    assert parse_lock("# c\n\nA_b==1.0  # why\n") == {"a-b": Version("1.0")}
    with pytest.raises(ValueError, match="line 1: not a pin"):
        parse_lock("numpy>=2\n")
    with pytest.raises(ValueError, match="line 2: NumPy pinned twice"):
        parse_lock("numpy==2.0\nNumPy==2.1\n")


def test_every_declared_dependency_is_pinned_within_its_bounds(lock):
    for where, reqs in _declared().items():
        for req in reqs:
            key = canonicalize_name(req.name)
            assert key in lock, f"{req} ({where or 'dependencies'}) has no pin in constraints.txt"
            assert req.specifier.contains(lock[key], prereleases=True), (
                f"constraints.txt pins {req.name}=={lock[key]}, outside {req} ({where or 'dependencies'})"
            )


def test_the_environment_holds_exactly_the_locked_versions(lock):
    """What the README's command installed: every locked distribution present has its locked version."""
    drift = []
    for dist in metadata.distributions():
        key = canonicalize_name(dist.metadata["Name"])
        if key in lock and Version(dist.version) != lock[key]:
            drift.append(f"{dist.metadata['Name']} {dist.version} (locked {lock[key]})")
    assert not drift, "installed without constraints.txt? " + ", ".join(sorted(drift))


def test_requires_python_admits_what_the_dependencies_need(lock):
    """The oldest Python that ``requires-python`` admits is one every installed dependency supports."""
    ours = SpecifierSet(_pyproject()["project"]["requires-python"])
    oldest = min(v for v in (Version(f"3.{minor}") for minor in range(8, 20)) if ours.contains(v))
    for req in _declared()[""]:
        try:
            needs = metadata.metadata(req.name)["Requires-Python"]
        except metadata.PackageNotFoundError:
            continue
        if needs:
            assert SpecifierSet(needs).contains(oldest), f"{req.name} needs Python {needs}; requires-python admits {oldest}"


def _third_party_imports() -> dict[str, str]:
    """Top-level names the product code imports (at any depth of the module), with one place each."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_import_of_the_code_is_a_declared_distribution():
    declared = {canonicalize_name(r.name) for reqs in _declared().values() for r in reqs}
    # A module name may come from several distributions (google.*): any declared one will do. Extras count:
    # an import behind an extra (boto3 for s3://) is declared there.
    providers = metadata.packages_distributions()
    missing = []
    for module, where in sorted(_third_party_imports().items()):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists:
            missing.append(f"{module} ({where}): no installed distribution provides it")
        elif not dists & declared:
            missing.append(f"{module} ({where}) comes from {sorted(dists)}, none declared in pyproject.toml")
    assert not missing, "\n".join(missing)

