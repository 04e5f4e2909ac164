"""The product packages import each other without cycles, read from the source with ``ast``.

Every ``import`` and ``from ... import`` counts, at the top of a module or inside a function: an import
deferred into a function still ties the two modules, and a cycle through one makes the code's real
dependency graph harder to read than the files' headers say. A package's ``__init__`` is a module of its
own (``from tokenizer import get_scheme`` depends on ``tokenizer/__init__.py``); ``from pkg import name``
depends on ``pkg.name`` when that is a module. The module-level ``__getattr__`` re-export, which hides an
import from the top of the file, is refused too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from tests.data_files import REPO_ROOT

PACKAGES = ("tokenizer", "beam_pipelines", "trainer")


def _modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _target(name: str, modules: dict) -> str | None:
    """The project module ``name`` names, or its closest enclosing project package; None outside the project."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: pathlib.Path = REPO_ROOT) -> dict[str, set[str]]:
    """``module -> the project modules it imports`` (dotted names), from every import statement."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, set())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(t for a in node.names if (t := _target(a.name, modules)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # a relative import: resolved against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:  # ``from pkg import mod`` names a module; ``from pkg import name`` the package
                    full = f"{base}.{alias.name}"
                    target = full if full in modules else _target(base, modules)
                    if target:
                        edges.add(target)
        edges.discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles among the product modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_module_getattr_reexport():
    offenders = [str(path.relative_to(REPO_ROOT)) for path in _modules(REPO_ROOT).values()
                 if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                        for n in ast.parse(path.read_text()).body)]
    assert not offenders, f"module-level __getattr__ in {offenders}"


def test_the_checker_finds_a_cycle(tmp_path):
    """The check itself: a planted two-module cycle (one import inside a function) and a relative import."""
    pkg = tmp_path / "trainer"
    pkg.mkdir()
    for package in PACKAGES[:2]:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from trainer.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("import trainer.a\n")
    graph = import_graph(tmp_path)
    assert graph["trainer.a"] == {"trainer.b"} and graph["trainer.b"] == {"trainer.a"}
    assert cycles(graph) == [["trainer.a", "trainer.b"]]
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    assert cycles(import_graph(tmp_path)) == []


@pytest.mark.parametrize("source, expected", [
    ("from tokenizer import order\n", {"tokenizer.order"}),
    ("from tokenizer import get_scheme\n", {"tokenizer"}),
    ("import tokenizer.order as o\n", {"tokenizer.order"}),
    ("import numpy\n", set()),
])
def test_edges(tmp_path, source, expected):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "tokenizer" / "order.py").write_text("")
    (tmp_path / "trainer" / "x.py").write_text(source)
    assert import_graph(tmp_path)["trainer.x"] == expected
