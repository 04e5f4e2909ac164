"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform

from beam_pipelines.common.cores import usable_cores


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line: CPU model, usable cores, memory, Python."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu_name()}, {usable_cores()} cores, {mem:.0f} GiB, Python {platform.python_version()}"
