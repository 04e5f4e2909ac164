"""beam_pipelines.ingest_atlas.decompress: telling the compressions apart, and the decoder each file gets."""

from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from beam_pipelines.common.errors import InputError
from beam_pipelines.ingest_atlas import decompress

TEXT = b'{"type":"ping"}\n' * 3000


def test_detect_compression():
    assert decompress.detect_compression("x.jsonl", b"{") is None
    assert decompress.detect_compression("x", gzip.compress(b"{}")) == "gzip"
    assert decompress.detect_compression("x.bz2", bz2.compress(b"{}")) == "bz2"
    assert decompress.detect_compression("x.XZ", lzma.compress(b"{}")) == "xz"
    with pytest.raises(InputError, match="x.gz: named like a gzip file"):
        decompress.detect_compression("x.gz", b"{}")
    with pytest.raises(InputError, match="x.xz: named like a xz file"):
        decompress.detect_compression("x.xz", gzip.compress(b"{}"))


@pytest.mark.parametrize(
    "compression, pack", [(None, bytes), ("gzip", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress)]
)
def test_open_stream_gives_the_text(tmp_path, compression, pack):
    path = tmp_path / "x"
    path.write_bytes(pack(TEXT))
    assert decompress.detect_compression(str(path), path.read_bytes()[:16]) == compression
    with decompress.open_stream(str(path), compression) as f:
        assert b"".join(iter(lambda: f.read(1000), b"")) == TEXT


def test_the_decoder_chosen(tmp_path, monkeypatch):
    """indexed_bzip2 where the process has 2 cores or more, or must seek; else the standard library, whose
    one-core decoder is the faster."""
    path = tmp_path / "x.bz2"
    path.write_bytes(bz2.compress(b"{}\n"))
    index = decompress.index_bz2(str(path))[1]
    for cores, blocks, parallel in ((2, None, True), (1, None, False), (1, index, True)):
        monkeypatch.setattr(decompress, "usable_cores", lambda cores=cores: cores)
        with decompress.open_stream(str(path), "bz2", blocks) as f:
            assert isinstance(f, decompress._ParallelBz2) == parallel and f.read() == b"{}\n"
    monkeypatch.setattr(decompress, "indexed_bzip2", None)  # as where the package is not installed
    assert decompress.bz2_decoder() == "bz2"
    monkeypatch.setattr(decompress, "usable_cores", lambda: 2)
    with decompress.open_stream(str(path), "bz2") as f:
        assert isinstance(f, bz2.BZ2File) and f.read() == b"{}\n"
