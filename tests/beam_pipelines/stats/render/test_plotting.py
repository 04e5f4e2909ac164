"""matplotlib is optional: loaded only when a page is drawn, and its absence skips report.html."""

from __future__ import annotations

import os
import subprocess
import sys

from beam_pipelines.stats import pipeline as stats


def test_without_matplotlib_the_page_is_skipped(parquet_inputs, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    pattern, _ = parquet_inputs
    assert stats.run(["--input", pattern, "--output", str(tmp_path), "--direct_running_mode=in_memory"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["report.json", "report.md"]
    assert "skipping report.html" in capsys.readouterr().err


def test_rendering_markdown_does_not_load_matplotlib():
    # A fresh interpreter: this process may have loaded matplotlib for another test already.
    code = (
        "import json, sys\n"
        "from beam_pipelines.stats import render\n"
        "from beam_pipelines.stats.raw import merge_all, raw_report\n"
        "report = json.loads(json.dumps(raw_report(merge_all([]), [], 'none')))\n"
        "assert render.render_markdown(report).startswith('# Ping data report')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
