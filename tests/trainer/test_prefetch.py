"""Prefetch (trainer/prefetch.py): the number of worker processes, and workers that end with their trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.trainer.helpers import make_config, subprocess_env
from trainer import prefetch


def test_num_workers_defaults_to_the_usable_cores(sample_dataset, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(40)), raising=False)
    assert prefetch.resolve_workers(make_config(sample_dataset)) == prefetch.MAX_AUTO_WORKERS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert prefetch.resolve_workers(make_config(sample_dataset)) == 2
    assert prefetch.resolve_workers(make_config(sample_dataset, "num_workers=0")) == 0
    assert prefetch.resolve_workers(make_config(sample_dataset, "num_workers=3")) == 3


@pytest.mark.slow
def test_worker_processes_end_with_a_killed_trainer(sample_dataset, repo_root):
    code = (
        "from trainer import data, train_stream\n"
        "from tests.trainer.helpers import make_config\n"
        f"config = make_config({str(sample_dataset)!r}, 'num_workers=2', 'batch_size=4')\n"
        "it = train_stream.train_iterator(data.open_dataset(config.data_dir, config), config)\n"
        # Batches come from the workers in turn: after four, both workers have started (and asked the
        # kernel to end them with the trainer). A worker still starting when the trainer dies is not covered.
        "for _ in range(4): next(it)\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=repo_root, env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=True).stdout.split()
        assert len(children) >= 2  # the workers (and Grain's resource tracker)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def alive(pid: str) -> bool:
        try:
            with open(f"/proc/{pid}/status") as f:
                return "zombie" not in f.read()
        except OSError:
            return False

    # A worker still importing when the trainer died leaves once it starts (seconds on a busy host).
    deadline = time.monotonic() + 60
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in children if alive(p)]
