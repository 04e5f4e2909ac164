"""``ingest_atlas`` of bz2 files from ``s3://`` (moto's server): the parallel decoder reads the object through
the storage layer, whole or in ranges from its block index, and gives the local plain file's shards."""

from __future__ import annotations

import bz2
import gzip
import itertools

import pytest

from beam_pipelines.ingest_atlas import discovery
from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from tests.beam_pipelines.ingest_atlas.helpers import IN_MEMORY, load_manifest, tree_bytes
from tests.objectstore.helpers import download_tree


@pytest.fixture(scope="module")
def text(atlas_file) -> bytes:
    """The first 1,500 real result lines (about 700 KB: several bz2 blocks at level 1)."""
    with gzip.open(atlas_file, "rb") as f:
        return b"".join(itertools.islice(f, 1500))


def _rows(out) -> dict[str, bytes]:
    return {k: v for k, v in tree_bytes(out).items() if k.startswith("part-")}


@pytest.mark.slow
@pytest.mark.parametrize("ranges", [False, True])
def test_bz2_from_s3_gives_the_plain_files_shards(s3, tmp_path, text, ranges, monkeypatch, capsys):
    local = tmp_path / "ping.jsonl"
    local.write_bytes(text)
    split = ["--split_bytes", "20000"]
    assert ingest_atlas.run(["--input", str(local), "--output", str(tmp_path / "plain"), IN_MEMORY, *split]) == 0

    bucket = s3.new_bucket()
    packed = tmp_path / "ping.jsonl.bz2"
    packed.write_bytes(bz2.compress(text, 1))
    s3.put_file(bucket, "atlas/ping.jsonl.bz2", packed)
    if ranges:  # index the object while planning and read its text in ranges, as on 8 cores or more
        monkeypatch.setattr(discovery, "BZ2_SPLIT_MIN_CORES", 1)
    url = f"s3://{bucket}/atlas/ping.jsonl.bz2"
    argv = ["--input", url, "--output", f"s3://{bucket}/parquet", IN_MEMORY, *split, *s3.beam_args]
    assert ingest_atlas.run(argv) == 0
    units = -(-len(text) // 20000) if ranges else 1
    assert f" {units} work unit(s) -> s3://{bucket}/parquet" in capsys.readouterr().err

    download_tree(s3, bucket, "parquet", tmp_path / "remote")
    assert _rows(tmp_path / "remote") == _rows(tmp_path / "plain") and _rows(tmp_path / "plain")
    manifest = load_manifest(tmp_path / "remote")
    assert manifest["inputs"][0]["compression"] == "bz2" and manifest["totals"] == load_manifest(tmp_path / "plain")["totals"]
    assert not [k for k in s3.keys(bucket, "parquet/") if "_tmp_ingest" in k]
