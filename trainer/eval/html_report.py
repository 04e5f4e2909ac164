"""``report.html`` of an evaluation: the report.md's headings, tables and text as one self-contained page,
its figures embedded (base64 PNG), so it opens in a browser from anywhere.

It reads the Markdown that ``trainer.eval.report.render_markdown`` writes, which uses only headings,
pipe tables, images on their own line and paragraphs; that subset is converted here instead of pulling in
a Markdown library for a page of our own making. Inline ``**bold**`` and ``code`` spans are kept as such.
"""

from __future__ import annotations

import base64
import html
import os
import re

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px}"
    "th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "img{max-width:100%;border:1px solid #eee}p{line-height:1.45}code{background:#f5f5f5;padding:0 3px}"
)
_NUMBER = re.compile(r"^[-+]?[\d,.]+(e[-+]\d+)?%?( \[.*\])?$|^-$")
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(lines[0]))
    body = []
    for line in lines[2:]:  # lines[1] is the |---| rule
        cells = "".join(f"<td{' class=num' if _NUMBER.match(c) else ''}>{_inline(c)}</td>" for c in _cells(line))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(alt: str, src: str, folder: str) -> str:
    path = os.path.join(folder, src)
    if not os.path.exists(path):
        return f"<p>({html.escape(alt)}: {html.escape(src)} missing)</p>"
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render(markdown: str, folder: str) -> str:
    """The page for ``markdown`` (report.md's text); images are read from ``folder``."""
    blocks, title, para, table = [], "ping-llm evaluation", [], []

    def flush():
        if para:
            blocks.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if table:
            blocks.append(_table(table))
            table.clear()

    for line in markdown.splitlines():
        s = line.strip()
        if s.startswith("|"):
            if para:
                flush()
            table.append(s)
            continue
        if table:
            flush()
        if not s:
            flush()
        elif s.startswith("#"):
            flush()
            level = len(s) - len(s.lstrip("#"))
            text = s[level:].strip()
            if level == 1:
                title = text
            blocks.append(f"<h{level}>{_inline(text)}</h{level}>")
        elif _IMAGE.match(s):
            flush()
            m = _IMAGE.match(s)
            blocks.append(_image(m["alt"], m["src"], folder))
        else:
            para.append(s)
    flush()
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(blocks)}</body></html>\n")
