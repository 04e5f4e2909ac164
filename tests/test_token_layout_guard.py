"""Guard: outside ``tokenizer/``, no module names a token id, a block length or a field offset of a scheme.

Readers get every fact about tokens from the scheme object (``tokenizer.get_scheme``). This test reads the
source of ``beam_pipelines/`` and ``trainer/`` (their syntax trees, so comments and docstrings do not count)
and fails on an import from ``tokenizer.vocab``, ``tokenizer.fields``, ``tokenizer.v1``/``tokenizer.v2`` (or a
module of v2's), an import of a layout constant from ``tokenizer``, or the v1 literals 266 (PAD) and 267 (vocabulary size).

``LEFT`` lists the modules that still read v1's layout directly, each with the reason; the test also fails
when one of them no longer needs its entry, so the list can only shrink.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYOUT_MODULES = {"tokenizer.vocab", "tokenizer.fields", "tokenizer.v1", "tokenizer.v2", "tokenizer.grammar",
                  "tokenizer.rtt_code", "tokenizer.vocab_v2", "tokenizer.v2_encode", "tokenizer.v2_parse",
                  "tokenizer.v2_reference", "tokenizer.grammar_v2"}
LAYOUT_NAMES = {"PAD", "VOCAB_SIZE", "IPV4_LENGTH", "IPV6_LENGTH", "measurement_length", "fields", "grammar",
                "vocab_v2", "v2_encode", "v2_parse", "v2_reference", "grammar_v2"}
LITERALS = {266, 267}

# Modules not moved onto the scheme object yet: trainer.predict's v1 queries fix any subset of v1's seven
# blocks (and sample the others), which v1's block layout spells; its v2 query goes through the scheme.
LEFT = {
    "trainer/eval/predict.py": "trainer.predict's any-field queries build v1 blocks",
}


def _offences(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in LAYOUT_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            elif node.module == "tokenizer":
                names = {a.name for a in node.names} & LAYOUT_NAMES
                if names:
                    found.append(f"line {node.lineno}: from tokenizer import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in LAYOUT_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value in LITERALS:
            found.append(f"line {node.lineno}: literal {node.value}")
    return found


def test_no_module_outside_the_tokenizer_names_the_token_layout():
    offending = {}
    for folder in ("beam_pipelines", "trainer"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            found = _offences(path)
            if found:
                offending[rel] = found
    unexpected = {k: v for k, v in offending.items() if k not in LEFT}
    assert not unexpected, f"token layout named outside tokenizer/ (use tokenizer.get_scheme): {unexpected}"
    cleared = sorted(k for k in LEFT if k not in offending)
    assert not cleared, f"no longer naming the layout, remove from LEFT: {cleared}"


def test_the_guard_sees_an_offence(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from tokenizer.vocab import RTT_START\nfrom tokenizer import PAD\nx = 266\n# 267 in a comment\n")
    assert len(_offences(bad)) == 3
