"""bz2 inputs: the parallel decoder (indexed_bzip2), its standard-library fallback, and a large bz2 file
cut into ranges of its text like a plain file. Whatever the compression, the decoder or the ranges, the
shards are byte-identical to those of the same text as a plain file."""

from __future__ import annotations

import bz2
import json
import os

import pytest

from beam_pipelines.common.errors import InputError
from beam_pipelines.ingest_atlas import decompress, discovery
from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from beam_pipelines.ingest_atlas.lines import iter_line_lists
from tests.beam_pipelines.ingest_atlas.helpers import IN_MEMORY, load_manifest, tree_bytes


@pytest.fixture(scope="module")
def text(real_lines) -> bytes:
    """About 650 KB of real result lines (so bz2 at level 1 makes several 100 KB blocks), with a blank
    line, a non-ping result and a line that is not JSON in the middle; no final newline."""
    lines = real_lines * 4
    lines[700:700] = [b"", b'{"type":"traceroute","msm_id":5001}', b"{not json"]
    return b"\n".join(lines)


def _without_noise(out) -> dict[str, bytes]:
    """An output's files but the manifest (it names the input's size, sha256 and compression) and `_SUCCESS`
    (the fingerprint, over the input's size)."""
    return {k: v for k, v in tree_bytes(out).items() if k not in ("manifest.json", "_SUCCESS")}


def _ingest(src, out, *extra) -> None:
    assert ingest_atlas.run(["--input", str(src), "--output", str(out), IN_MEMORY, "--shard_rows", "500", *extra]) == 0


def _counts(out) -> dict:
    m = load_manifest(out)
    return {"totals": m["totals"], "rejected": m["rejected"], "skipped": m["skipped"], "shards": m["shards"]}


def _pbzip2_like(data: bytes, piece: int) -> bytes:
    """Concatenated bz2 streams of ``piece`` bytes each, cut anywhere (mid-line), as pbzip2 writes them."""
    return b"".join(bz2.compress(data[i : i + piece], 1) for i in range(0, len(data), piece))


@pytest.fixture(autouse=True)
def split_on_any_machine(monkeypatch):
    """Index and split large bz2 files on this machine too (by default only on 8 cores or more)."""
    monkeypatch.setattr(discovery, "BZ2_SPLIT_MIN_CORES", 1)


@pytest.fixture()
def no_indexed_bzip2(monkeypatch):
    """No ``indexed_bzip2``, as where the package is not installed."""
    monkeypatch.setattr(decompress, "indexed_bzip2", None)
    assert decompress.bz2_decoder() == "bz2"


def _line_start(data: bytes, near: int) -> int:
    return data.index(b"\n", near) + 1


_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "kind, split, decoder",
    [
        ("single", None, "indexed_bzip2"),  # one work unit
        ("single", 20_000, "indexed_bzip2"),  # ranges that end mid-line, across 100 KB blocks
        ("pbzip2", 17_000, "indexed_bzip2"),  # concatenated streams cut mid-line, ranges across stream boundaries
        ("single", "line", "indexed_bzip2"),  # a range boundary exactly at the start of a line
        pytest.param("single", 1, "indexed_bzip2", marks=_SLOW),  # a range per byte: most own no line at all
        # Without indexed_bzip2: the standard library, whole files whatever --split_bytes says.
        ("single", None, "bz2"),
        ("pbzip2", 17_000, "bz2"),
        pytest.param("single", 20_000, "bz2", marks=_SLOW),
        pytest.param("single", 1, "bz2", marks=_SLOW),
    ],
)
def test_bz2_gives_the_plain_files_shards(tmp_path, request, text, kind, split, decoder):
    if decoder == "bz2":
        request.getfixturevalue("no_indexed_bzip2")
    data = text if split != 1 else text[:1200]  # one range per byte: a short text
    if split == "line":
        split = _line_start(data, 20_000)
        assert data[split - 1 : split] == b"\n"
    src = tmp_path / "in" / "ping-2024-01-15T0300"  # the same path for both runs: rejected lines name it
    src.parent.mkdir()
    src.write_bytes(data)
    extra = ["--split_bytes", str(split)] if split else []
    _ingest(src, tmp_path / "plain", *extra)

    src.write_bytes(bz2.compress(data, 1) if kind == "single" else _pbzip2_like(data, 150_001))
    files = discovery.inspect_inputs([str(src)])
    indexed = discovery.index_bz2_files(files, split or discovery.BZ2_SPLIT_BYTES)
    planned = discovery.plan_units(indexed, split or 1 << 40)
    if decoder == "indexed_bzip2" and split:
        assert len(planned) == -(-len(data) // split) > 1 and all(u.blocks for u in planned)
    else:
        assert len(planned) == 1 and planned[0].blocks is None
    _ingest(src, tmp_path / "bz2", *extra)

    assert _without_noise(tmp_path / "bz2") == _without_noise(tmp_path / "plain")
    assert _counts(tmp_path / "bz2") == _counts(tmp_path / "plain")
    manifest = load_manifest(tmp_path / "bz2")
    assert manifest["inputs"][0]["compression"] == "bz2"
    assert manifest["totals"]["records"] == sum(1 for line in data.split(b"\n") if line.strip())


def test_ranges_read_each_line_once(tmp_path, text):
    """The units of an indexed bz2 file own the lines that start in their range: together, every line once."""
    path = tmp_path / "x.bz2"
    path.write_bytes(_pbzip2_like(text, 99_999))
    (f,) = discovery.index_bz2_files(discovery.inspect_inputs([str(path)]), 0)
    assert (f.text_bytes, f.layout) == (len(text), "lines") and len(f.blocks) > 6
    offsets = [o for _, o in f.blocks]
    assert offsets[0] == 0 and {99_999, 199_998} <= set(offsets)  # each stream starts a block
    units = discovery.plan_units([f], 33_333)
    assert [(u.start, u.end) for u in units][-1] == ((len(units) - 1) * 33_333, len(text))
    lines = []
    for u in units:
        with decompress.open_stream(u.path, u.compression, u.blocks) as raw:
            for chunk in iter_line_lists(raw, u.start, u.end, chunk_bytes=4096):
                lines.extend(chunk)
    assert lines == text.split(b"\n")


def test_small_bz2_is_one_unit_and_the_default_threshold(tmp_path, text):
    path = tmp_path / "x.bz2"
    path.write_bytes(bz2.compress(text))
    files = discovery.inspect_inputs([str(path)])
    assert discovery.index_bz2_files(files) == files  # far below the default: not indexed, read whole
    assert discovery.plan_units(files, 1000) == [discovery.WorkUnit(0, str(path), "bz2", None, 0, 0, None)]


def test_few_cores_read_a_large_bz2_file_whole(tmp_path, text, monkeypatch):
    """Below BZ2_SPLIT_MIN_CORES the index's extra decode is not worth it: the file stays one unit."""
    path = tmp_path / "x.bz2"
    path.write_bytes(bz2.compress(text))
    files = discovery.inspect_inputs([str(path)])
    monkeypatch.setattr(discovery, "BZ2_SPLIT_MIN_CORES", 8)
    monkeypatch.setattr(discovery, "usable_cores", lambda: 7)
    assert discovery.index_bz2_files(files, 0) == files
    monkeypatch.setattr(discovery, "usable_cores", lambda: 8)
    (indexed,) = discovery.index_bz2_files(files, 0)
    assert indexed.text_bytes == len(text) and len(discovery.plan_units([indexed], 100_000)) == 6


@pytest.mark.parametrize("decoder", ["indexed_bzip2", pytest.param("bz2", marks=_SLOW)])
def test_empty_bz2(tmp_path, request, decoder):
    """A bz2 file holding no text (and one holding two empty streams) ingests like an empty plain file."""
    if decoder == "bz2":
        request.getfixturevalue("no_indexed_bzip2")
    src = tmp_path / "in" / "ping"
    src.parent.mkdir()
    src.write_bytes(b"")
    _ingest(src, tmp_path / "plain")
    for name, data in (("one", bz2.compress(b"")), ("two", bz2.compress(b"") * 2)):
        src.write_bytes(data)
        _ingest(src, tmp_path / name, "--split_bytes", "1")
        assert _without_noise(tmp_path / name) == _without_noise(tmp_path / "plain")
        assert load_manifest(tmp_path / name)["totals"]["records"] == 0


def test_an_empty_file_named_bz2_is_refused(tmp_path, capsys):
    (tmp_path / "x.bz2").write_bytes(b"")
    out = tmp_path / "out"
    assert ingest_atlas.run(["--input", str(tmp_path / "x.bz2"), "--output", str(out), IN_MEMORY]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{tmp_path / 'x.bz2'}: named like a bz2 file but is not one" in errors[0]
    assert not out.exists()


def _truncated(text: bytes) -> bytes:
    return bz2.compress(text, 1)[:-5000]


def _corrupt(text: bytes) -> bytes:
    data = bytearray(bz2.compress(text, 1))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # a hole in the middle of a block
    return bytes(data)


@pytest.mark.parametrize("damage", [_truncated, _corrupt])
def test_a_bad_bz2_file_found_while_planning(tmp_path, capsys, text, damage):
    """A bz2 file large enough to be indexed is decoded before anything is written: a bad one is one
    `error:` line naming it, exit 2, and no output at all."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_bytes(text[:5000])
    bad = src / "b.jsonl.bz2"
    bad.write_bytes(damage(text))
    out = tmp_path / "out"
    assert ingest_atlas.run(["--input", str(src), "--output", str(out), IN_MEMORY, "--split_bytes", "10000"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{bad}: cannot read bz2 stream: " in errors[0], err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("decoder", ["indexed_bzip2", "bz2"])
@pytest.mark.parametrize("damage", [_truncated, _corrupt])
def test_a_bad_bz2_file_found_while_reading(tmp_path, capsys, request, text, damage, decoder):
    """A bz2 file read whole (under the split threshold) is found bad only while reading: one `error:` line
    naming it, exit 1 (a failed run), no manifest or `_SUCCESS`, only Beam's log left."""
    if decoder == "bz2":
        request.getfixturevalue("no_indexed_bzip2")
    src = tmp_path / "in"
    src.mkdir()
    bad = src / "b.jsonl.bz2"
    bad.write_bytes(damage(text))
    out = tmp_path / "out"
    assert ingest_atlas.run(["--input", str(src), "--output", str(out), IN_MEMORY]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{bad}: cannot read bz2 stream: " in errors[0], err
    assert os.listdir(out) == ["_tmp_ingest"] and os.listdir(out / "_tmp_ingest") == ["pipeline.log"]


def test_the_parallel_decoder_names_a_bad_file(tmp_path, text, monkeypatch):
    """The decoder's own errors (ValueError, a bare C++ exception) become InputError naming the file."""
    # open_stream takes the parallel decoder only where the process may use two cores or more; pin that,
    # so the test reads through it on a one-core machine too (it then runs two threads on one core).
    monkeypatch.setattr(decompress, "usable_cores", lambda: 2)
    for name, data in (("cut.bz2", _truncated(text)), ("hole.bz2", _corrupt(text))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError, match=f"{name}: cannot read bz2 stream: .+"):
            decompress.index_bz2(str(path))
        with pytest.raises(InputError, match=f"{name}: cannot read bz2 stream: .+"):
            with decompress.open_stream(str(path), "bz2") as f:
                while f.read(1 << 16):
                    pass
    with pytest.raises(InputError, match="truncated or corrupt"):
        decompress.index_bz2(str(tmp_path / "cut.bz2"))


def test_the_manifest_records_the_same_counts_as_json(tmp_path, text):
    """The bz2 run's manifest is the plain run's but for the input's own facts (bytes, sha256, compression)."""
    src = tmp_path / "in" / "p"
    src.parent.mkdir()
    src.write_bytes(text)
    _ingest(src, tmp_path / "plain", "--split_bytes", "30000")
    src.write_bytes(bz2.compress(text, 1))
    _ingest(src, tmp_path / "bz2", "--split_bytes", "30000")
    a, b = load_manifest(tmp_path / "plain"), load_manifest(tmp_path / "bz2")
    for m in (a, b):
        m.pop("fingerprint")
        m["inputs"] = [{k: v for k, v in i.items() if k not in ("bytes", "sha256", "compression")} for i in m["inputs"]]
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
