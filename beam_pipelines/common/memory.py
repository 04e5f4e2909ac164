"""Keeping freed array memory in the process instead of handing it back to the kernel (glibc only).

The jobs' stages allocate and free arrays of tens of megabytes per batch. glibc's ``malloc`` serves
large blocks with ``mmap`` and returns freed memory at the top of the heap to the kernel, so each
batch's arrays are fresh pages and every page is faulted in again: on the 2-core development machine
about a quarter of the pretokenize stages' CPU time was the kernel's (page faults; 0.92 s of system
time for 1M rows in one process, 0.56 s with the settings below, the same user time; medians of 5).

:func:`keep_freed_memory` raises the thresholds with ``mallopt`` (glibc's documented tunables; the same
as the ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``/``MALLOC_TOP_PAD_`` environment variables, which
a worker started by a cluster cannot be given): blocks up to 32 MiB come from the heap, and up to 1 GiB of
freed heap is kept for reuse. A process's peak memory is unchanged (what is kept was in use at the peak);
what it holds between batches may be larger. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys

from beam_pipelines.common.tricks import PLAIN_MALLOC, plain

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Apply the settings above once per process; True when they took effect (glibc), else False."""
    if not sys.platform.startswith("linux") or plain(PLAIN_MALLOC):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, without a library search
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(
        mallopt(param, value) == 1  # mallopt returns 1 on success
        for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    )
