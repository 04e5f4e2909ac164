"""Fixtures of the pretokenize tests.

Every version in a manifest records when it was created (``created``), from the clock unless the
``SOURCE_DATE_EPOCH`` environment variable fixes it (the reproducible-builds convention). The tests here
compare whole outputs byte for byte, manifests included, so they fix it;
``test_append.py::test_without_source_date_epoch_only_created_differs`` checks
what changes without it (``created`` and nothing else).
"""

from __future__ import annotations

import pytest

from tests.data_files import SOURCE_DATE_EPOCH


@pytest.fixture(scope="package", autouse=True)
def _reproducible_created():
    # Package scope: set before the module-scoped fixtures that run pretokenize, undone after the package.
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
    yield
    mp.undo()
