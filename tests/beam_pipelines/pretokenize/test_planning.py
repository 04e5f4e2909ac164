"""Planning a pretokenize run: the number of buckets."""

from __future__ import annotations

from beam_pipelines.pretokenize import planning


def test_bucket_count_is_the_smallest_power_of_two_within_bucket_rows():
    assert planning.bucket_count(0, 1_000_000) == 1
    assert planning.bucket_count(1_000_000, 1_000_000) == 1
    assert planning.bucket_count(1_000_001, 1_000_000) == 2
    assert planning.bucket_count(2_500_000, 1_000_000) == 4  # not 3: two workers pack two each
    assert planning.bucket_count(10_000_000, 1_000_000) == 16
    assert planning.bucket_count(9, 1) == 16
