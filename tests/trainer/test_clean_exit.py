"""Runs end without warnings: training with worker processes, evaluation, and workers of a killed trainer.

Training with Grain worker processes used to end with multiprocessing's "resource_tracker: There appear
to be N leaked shared_memory objects to clean up at shutdown": the workers' parent-death signal fired when
Grain joined the thread that had started them, killing them mid-way through handing a batch over
(``trainer.prefetch.die_with_parent``). These tests run the real commands in subprocesses, as a user does,
and read everything they write on stderr.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.trainer.helpers import MINI, REPO_ROOT, cli, subprocess_env

STEPS = 4  # batches of 4 records: one Grain element (a chunk of 64 batches) per worker is enough
RUN = [*MINI, f"steps={STEPS}", "batch_size=4", "warmup_steps=2", "num_workers=2", "eval_every=0", "eval_batches=1",
       f"checkpoint_every={STEPS}"]
# What a clean exit must not print. "warning:" is also this project's own prefix for a warning line.
BAD = re.compile(r"leaked|resource_tracker|Warning|warning:|Traceback|Exception ignored", re.IGNORECASE)


def _lines(stderr: str) -> list[str]:
    """stderr as the lines a terminal shows last (a progress bar rewrites its line with carriage returns)."""
    return [part for line in stderr.splitlines() for part in line.split("\r") if part.strip()]


# A tqdm progress-bar line: "desc: 42%|████      | 5/12 [...]".
PROGRESS = re.compile(r"^[\w ]{1,40}: +\d{1,3}%\|")


def _tail_after_progress(stderr: str) -> list[str]:
    """The lines after the last progress-bar update."""
    lines = _lines(stderr)
    last = max((i for i, line in enumerate(lines) if PROGRESS.match(line)), default=-1)
    return lines[last + 1 :]


def _assert_clean(result: subprocess.CompletedProcess, desc: str) -> None:
    """Exit 0, the ``desc`` progress bar shown, and nothing else on stderr: no line after the last progress
    line, and no line that is not a progress bar or that names a warning."""
    shown = f"exit {result.returncode}; stderr:\n{result.stderr[-6000:]}"
    assert result.returncode == 0, shown
    assert any(line.startswith(f"{desc}: ") and PROGRESS.match(line) for line in _lines(result.stderr)), (
        f"no {desc!r} progress bar; {shown}")
    assert _tail_after_progress(result.stderr) == [], f"output after the last progress line; {shown}"
    noise = [line for line in _lines(result.stderr) if not PROGRESS.match(line) or BAD.search(line)]
    assert noise == [], f"stderr holds more than progress bars; {shown}"


@pytest.fixture(scope="module")
def worker_run(sample_dataset, tmp_path_factory):
    """``python -m trainer.train`` with two worker processes, the progress bar on, a few steps."""
    workdir = tmp_path_factory.mktemp("clean_exit")
    args = ["tiny", f"data_dir={sample_dataset}", f"workdir={workdir}", *RUN]
    result = subprocess.run(cli(args), cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    return workdir, result


@pytest.mark.slow
def test_training_with_worker_processes_ends_without_a_warning(worker_run):
    workdir, result = worker_run
    _assert_clean(result, "train")
    assert '"step": 4' in result.stdout  # the run did train, to the end
    assert (workdir / "checkpoints" / str(STEPS)).is_dir()


@pytest.mark.slow
def test_evaluation_ends_without_a_warning(worker_run, sample_dataset, tmp_path):
    workdir, trained = worker_run
    assert trained.returncode == 0, trained.stderr[-3000:]
    args = ["--workdir", str(workdir), "--data_dir", str(sample_dataset), "--split", "test",
            "--output", str(tmp_path / "report"), "--max_measurements", "4", "--samples", "4", "--nll_batches", "1"]
    result = subprocess.run([sys.executable, "-m", "trainer.evaluate", *args], cwd=REPO_ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    _assert_clean(result, "rtt samples")
    assert (tmp_path / "report" / "report.json").is_file()


_HOLD_WORKERS = """
import multiprocessing, sys, time
from trainer import config as config_lib, data, train_stream
config = config_lib.load_config("tiny", sys.argv[1:])
iterator = train_stream.train_iterator(data.open_dataset(config.data_dir, config), config)
next(iterator)
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped by whoever adopted it, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_the_trainer_is_killed(sample_dataset, tmp_path):
    """The workers watch their trainer: SIGKILLed, it leaves none behind (they would block on a full queue)."""
    args = [f"data_dir={sample_dataset}", "num_workers=2", "batch_size=4"]
    workers: list[int] = []
    with open(tmp_path / "stderr", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", _HOLD_WORKERS, *args], cwd=REPO_ROOT, env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            workers = [int(p) for p in proc.stdout.readline().split()]
            err.seek(0)
            assert len(workers) == 2 and all(_alive(p) for p in workers), (
                f"workers {workers}; stderr:\n{err.read()[-3000:]}")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            deadline = time.time() + 30
            while time.time() < deadline and any(_alive(p) for p in workers):
                time.sleep(0.1)
            left = [p for p in workers if _alive(p)]
            assert not left, f"workers {left} outlived the trainer"
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            for pid in workers:  # only what this test started, should the check above have failed
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
