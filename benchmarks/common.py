"""What every benchmark shares: what it prints about the machine it ran on, its scratch folder, and the CPU
time of the processes it runs."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import tempfile
from collections.abc import Iterator

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


def children_cpu() -> float:
    """User + system CPU seconds of this process's children that have been waited for (and of their waited
    descendants); the difference of two calls is what the processes waited for in between used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    """The load averages over 1, 5 and 15 minutes, as ``1.00 0.80 0.50``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def scratch_folder(workdir: str | None, prefix: str) -> Iterator[str]:
    """``workdir`` (made if missing, and kept), or else a temporary folder named ``prefix...`` that is removed
    when the block ends, failed or not."""
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        yield workdir
        return
    work = tempfile.mkdtemp(prefix=prefix)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
