"""``ingest_atlas --append`` on ``s3://`` (moto's server, see conftest): a new version, old objects untouched,
a rerun with nothing new changes nothing."""

from __future__ import annotations

import json

import pytest

from beam_pipelines.ingest_atlas import pipeline as ingest_atlas
from tests.beam_pipelines.ingest_atlas.conftest import real_lines  # noqa: F401 - the fixture, used here too
from tests.beam_pipelines.ingest_atlas.helpers import IN_MEMORY
from tests.beam_pipelines.ingest_atlas.test_append import _round1, _round2
from tests.objectstore.helpers import upload_tree


@pytest.mark.slow
def test_append_on_s3(s3, real_lines, tmp_path):  # noqa: F811
    bucket = s3.new_bucket()
    local_in = tmp_path / "incoming"
    url_in, url_out = f"s3://{bucket}/incoming/", f"s3://{bucket}/pq"
    argv = ["--input", url_in, "--output", url_out, "--append", IN_MEMORY, *s3.beam_args]

    def objects() -> dict[str, bytes]:
        return {k: s3.get(bucket, k) for k in s3.keys(bucket, "pq/")}

    _round1(local_in, real_lines)
    upload_tree(s3, bucket, "incoming", local_in)
    assert ingest_atlas.run(argv) == 0
    v1 = objects()
    _round2(local_in, real_lines)
    upload_tree(s3, bucket, "incoming", local_in)
    assert ingest_atlas.run(argv) == 0
    after = objects()

    assert all(after[k] == v for k, v in v1.items() if not k.endswith(("manifest.json", "_SUCCESS")))
    assert sorted(set(after) - set(v1)) == [
        "pq/part-v00002-00000-of-00001.parquet", "pq/rejected/rejected-v00002-00000-of-00001.parquet"
    ]  # fmt: skip
    m = json.loads(after["pq/manifest.json"])
    assert m["version"] == 2 and [i["path"] for i in m["versions"][1]["inputs"]] == [
        f"{url_in}b.jsonl.gz", f"{url_in}d.jsonl"
    ]
    assert m["totals"]["rows"] == sum(v["totals"]["rows"] for v in m["versions"]) == len(real_lines) - 1
    assert json.loads(after["pq/_SUCCESS"])["fingerprint"] == m["fingerprint"]

    # A rerun with nothing new: nothing to do, nothing changes.
    assert ingest_atlas.run(argv) == 0
    assert objects() == after
