"""The real RIPE Atlas file (488,061 results) recompressed as bz2 ingests to the same shards and rejected lines as
the gzip file: read whole by the parallel decoder, in ranges of its text from its block index, and by the standard
library."""

from __future__ import annotations

import bz2
import gzip
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest

from beam_pipelines.ingest_atlas import decompress, discovery
from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from tests.beam_pipelines.ingest_atlas.helpers import IN_MEMORY, load_manifest, tree_bytes

pytestmark = pytest.mark.slow  # the whole real file, three times (and the session's gzip run)

RESULTS = 488_061


def _pbzip2_like(text: bytes, piece: int = 16 << 20) -> bytes:
    """bz2 streams of ``piece`` bytes each at level 9, compressed in threads (bz2 releases the GIL) and
    concatenated, as pbzip2 writes them: a multi-stream file, each stream of many 900 KB blocks."""
    pieces = [text[i : i + piece] for i in range(0, len(text), piece)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return b"".join(pool.map(lambda p: bz2.compress(p, 9), pieces))


def _outputs_but_input_facts(out) -> dict[str, bytes]:
    """Every file but the manifest and `_SUCCESS` (they name the input's size, sha256 and compression) and the
    rejected lines (they name the input's path; compared as tables below)."""
    return {k: v for k, v in tree_bytes(out).items() if k not in ("manifest.json", "_SUCCESS") and
            not k.startswith("rejected/")}


def test_real_file_as_bz2_gives_the_gzip_files_shards(tmp_path, atlas_file, atlas_ingested, monkeypatch):
    src = tmp_path / "in" / "ping-results"  # one path for every bz2 run: the rejected lines name it
    src.parent.mkdir()

    def ingest(name, *extra):
        out = tmp_path / name
        assert ingest_atlas.run(["--input", str(src), "--output", str(out), IN_MEMORY, *extra]) == 0
        return out

    gz = atlas_ingested  # the gzip file, ingested with the same options once per session (tests/conftest.py)
    with gzip.open(atlas_file, "rb") as f:
        text = f.read()
    src.write_bytes(_pbzip2_like(text))
    assert src.stat().st_size > 8 << 20
    whole = ingest("bz2")  # the parallel decoder, one work unit (2 cores: below BZ2_SPLIT_MIN_CORES)
    monkeypatch.setattr(discovery, "BZ2_SPLIT_MIN_CORES", 1)
    ranges = ingest("bz2-ranges", "--split_bytes", str(8 << 20))  # indexed, 27 ranges of 8 MiB of text
    monkeypatch.setattr(decompress, "indexed_bzip2", None)  # as where the package is not installed
    assert decompress.bz2_decoder() == "bz2"
    stdlib = ingest("bz2-stdlib", "--split_bytes", str(8 << 20))  # the fallback: whole, one core

    expected = _outputs_but_input_facts(gz)
    assert sum(1 for k in expected if k.startswith("part-")) >= 1
    expected_rejected = pq.read_table(gz / "rejected")
    assert expected_rejected.num_rows == 49 and set(expected_rejected.column("file").to_pylist()) == {str(atlas_file)}
    for out in (whole, ranges, stdlib):
        assert _outputs_but_input_facts(out) == expected
        rejected = pq.read_table(out / "rejected")
        assert sorted(k for k in tree_bytes(out) if k.startswith("rejected/")) == sorted(
            k for k in tree_bytes(gz) if k.startswith("rejected/"))
        # The same lines, in the same order, each naming this input instead of the gzip file.
        assert set(rejected.column("file").to_pylist()) == {str(src)}
        assert rejected.drop_columns(["file"]).equals(expected_rejected.drop_columns(["file"]))
        manifest = load_manifest(out)
        assert manifest["inputs"][0]["compression"] == "bz2"
        assert manifest["totals"] == load_manifest(gz)["totals"] and manifest["totals"]["records"] == RESULTS
