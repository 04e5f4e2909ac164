"""The one progress reporter: markers left by workers, lines off a terminal, a bar on one, a clean stop."""

from __future__ import annotations

import io
import itertools
import os
import time

from beam_pipelines.common.progress import Progress, sum_markers, write_marker


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_markers_are_replaced_and_summed(tmp_path):
    write_marker(str(tmp_path), "encode-a", rows=300)
    write_marker(str(tmp_path), "encode-b", rows=200, other=9)
    write_marker(str(tmp_path), "encode-a", rows=500)  # a later report of the same task replaces it
    (tmp_path / "encode-c.json").write_text('{"ro')  # being written right now: skipped, counted next poll
    (tmp_path / "pack-a.json").write_text('{"rows": 7}')  # another pattern
    assert sum_markers(str(tmp_path), "encode-*.json", "rows") == 700
    assert sum_markers(str(tmp_path), "encode-*.json", "other") == 9
    assert sorted(os.listdir(tmp_path)) == ["encode-a.json", "encode-b.json", "encode-c.json", "pack-a.json"]


def test_a_marker_that_cannot_be_written_is_not_an_error(tmp_path):
    write_marker(str(tmp_path / "missing"), "x", rows=1)  # no such folder: the display only lags
    assert not (tmp_path / "missing").exists()


def test_lines_off_a_terminal_with_rate_and_eta():
    counts = itertools.chain([0, 0, 250], itertools.repeat(500))
    stream = io.StringIO()
    with Progress("pretokenize", lambda: next(counts), 1000, unit="rows", label="encoded", every=0.05, stream=stream):
        time.sleep(0.6)
    lines = stream.getvalue().splitlines()
    assert lines, "no progress line"
    assert all(line.startswith("[pretokenize] encoded ") for line in lines)
    assert "[pretokenize] encoded 500/1,000 rows (50%), " in lines[-1]
    assert " rows/s, ETA " in lines[-1] and lines[-1].endswith(" s")


def test_nothing_is_printed_before_anything_is_done_or_before_every_seconds():
    stream = io.StringIO()
    with Progress("stats", lambda: 0, 10, every=0.05, stream=stream):
        time.sleep(0.3)
    with Progress("stats", lambda: 5, 10, every=60, stream=stream):
        time.sleep(0.3)
    assert stream.getvalue() == ""


def test_without_a_total_and_with_a_detail():
    stream = io.StringIO()

    def detail(elapsed):
        return f"{3:,} MB of JSON, {3 / elapsed:,.1f} MB/s"

    with Progress("ingest_atlas", lambda: 1234, unit="lines", every=0.05, detail=detail, stream=stream):
        time.sleep(0.3)
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("[ingest_atlas] 1,234 lines, ") and " lines/s; 3 MB of JSON, " in line
    assert "ETA" not in line and "%" not in line


def test_a_bar_on_a_terminal_and_no_lines():
    stream = _Terminal()
    with Progress("pretokenize", lambda: 600, 1000, label="encode", every=0.05, stream=stream):
        time.sleep(0.6)
    text = stream.getvalue()
    assert "encode" in text and "600/1" in text and "[pretokenize]" not in text


def test_stop_is_prompt_and_idempotent():
    progress = Progress("job", lambda: 1, 2, every=600)
    progress.start()
    started = time.monotonic()
    progress.stop()
    progress.stop()
    assert not progress.is_alive() and time.monotonic() - started < 2
    Progress("job", lambda: 1, 2).stop()  # never started: nothing to stop
