"""Where the tests find their input files: the bundled sample and the real RIPE Atlas file.

The real file is not in the repository (it is 488,061 results); it lives in the shared folder beside the
checkout, where CI lays it too. Tests that need it skip, with the path in the reason, where it is absent.
"""

from __future__ import annotations

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
ATLAS_FILE = REPO_ROOT.parent / "shared" / "data" / "atlas" / "ping-results.jsonl.gz"
# When the datasets the tests make say they were created (``created`` in a manifest, from the
# ``SOURCE_DATE_EPOCH`` environment variable): fixed, so that runs compare byte for byte, manifests included.
SOURCE_DATE_EPOCH = "1796032800"  # 2026-11-30T10:00:00Z


def require_atlas_file(path: pathlib.Path = ATLAS_FILE) -> pathlib.Path:
    """``path`` if it is a file; otherwise skip the calling test, saying which file is missing and why."""
    if not path.is_file():
        pytest.skip(
            f"needs the real RIPE Atlas file {path}, which is absent here "
            "(it lives in the shared folder beside the checkout; CI has it)"
        )
    return path
