"""``ingest_atlas`` of the real RIPE Atlas file from ``s3://`` to ``s3://`` (moto's server, see conftest)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from tests.beam_pipelines.ingest_atlas.helpers import tree_bytes
from tests.beam_pipelines.pretokenize.helpers import IN_MEMORY
from tests.objectstore.helpers import download_tree

RESULTS = 488_061  # lines of the real file (tests/beam_pipelines/ingest_atlas/test_real_file.py)


@pytest.mark.slow
def test_real_file_from_s3_to_s3_is_byte_identical_to_local(s3, atlas_file, atlas_ingested, tmp_path):
    bucket = s3.new_bucket()
    s3.put_file(bucket, f"atlas/{atlas_file.name}", atlas_file)
    local_out = atlas_ingested  # the same job on the local file, run once per session (tests/conftest.py)
    argv = ["--input", f"s3://{bucket}/atlas/", "--output", f"s3://{bucket}/parquet", IN_MEMORY, *s3.beam_args]
    assert ingest_atlas.run(argv) == 0

    keys = s3.keys(bucket, "parquet/")
    assert "parquet/manifest.json" in keys and "parquet/_SUCCESS" in keys
    assert not [k for k in keys if "_tmp_ingest" in k or "_writer.lock" in k]  # no scratch, no lock
    download_tree(s3, bucket, "parquet", tmp_path / "remote")
    local, remote = tree_bytes(local_out), tree_bytes(tmp_path / "remote")
    assert sorted(local) == sorted(remote)
    # Row shards byte for byte; rejected lines the same but for the input path they name; the manifests
    # differ only in where the input was (its path, and the rejected files' hashes that depend on it).
    parts = [k for k in local if k.startswith("part-")]
    assert parts and all(local[k] == remote[k] for k in parts)
    url = f"s3://{bucket}/atlas/{atlas_file.name}"
    rej_local = pq.read_table(local_out / "rejected")
    rej_remote = pq.read_table(tmp_path / "remote" / "rejected")
    assert set(rej_local.column("file").to_pylist()) == {str(atlas_file)}
    assert set(rej_remote.column("file").to_pylist()) == {url}
    assert rej_remote.drop_columns(["file"]).equals(rej_local.drop_columns(["file"]))
    m_local, m_remote = json.loads(local["manifest.json"]), json.loads(remote["manifest.json"])
    assert [i["path"] for i in m_remote["inputs"]] == [url]
    assert m_remote["totals"]["records"] == RESULTS
    for m in (m_local, m_remote):
        m.pop("fingerprint")
        m["inputs"] = [{**i, "path": None} for i in m["inputs"]]
        m["rejected_files"] = [{**f, "sha256": None, "bytes": None} for f in m["rejected_files"]]
    assert m_remote == m_local
