"""keep_freed_memory: freed arrays are reused from the heap instead of being faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# 20 times: allocates five 8 MiB arrays (touching every page) and frees them all, as a stage does per batch;
# prints the minor page faults this took.
_PROBE = """
import resource, sys
import numpy as np
from beam_pipelines.common.memory import keep_freed_memory
if sys.argv[1] == "1":
    assert keep_freed_memory()
np.ones(1 << 21)  # warm up numpy
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    arrays = [np.ones(1 << 20) for _ in range(5)]  # 8 MiB each
    del arrays
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if keep else "0"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_arrays_are_reused_without_page_faults():
    pages = (40 << 20) // 4096  # one round's arrays
    # glibc hands freed blocks back to the kernel, and they are faulted in again (41k faults measured)
    assert _faults(keep=False) > 2 * pages
    assert _faults(keep=True) < pages  # faulted in once, then reused (1.5k measured)


def test_applies_once_and_reports_success():
    from beam_pipelines.common.memory import keep_freed_memory

    first = keep_freed_memory()
    assert first is keep_freed_memory()
    assert first is sys.platform.startswith("linux")
