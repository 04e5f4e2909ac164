"""Numbers as the reports print them."""

from __future__ import annotations

from beam_pipelines.stats.render.formatting import human, ms


def test_human_numbers():
    assert [human(n) for n in (912, 66_275, 57_700_000, 100_005_691)] == [
        "912",
        "66.3K",
        "57.7M",
        "100.0M",
    ]
    assert ms(50.0) == "50 ms" and ms(302281.5) == "302,281.5 ms"
