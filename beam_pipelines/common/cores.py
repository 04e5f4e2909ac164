"""How many cores this process may use (shared by the jobs' runner choice and the trainer's workers)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the platform has one (a container or
    ``taskset`` may allow fewer than the machine has), else ``os.cpu_count()``."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
