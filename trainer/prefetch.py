"""Prefetching the training stream: Grain's prefetch threads, or its worker processes (chunks come back
through shared memory), and the workers' watch on the trainer process (they end when it ends)."""

from __future__ import annotations

import functools
import os
import threading
import time

import grain
from absl import flags

from beam_pipelines.common.cores import usable_cores
from trainer.config import Config

PARENT_POLL_S = 0.5  # how often a worker checks that its trainer is alive (a sleeping thread costs nothing)


def die_with_parent(trainer_pid: int, worker_index: int, worker_count: int) -> None:
    """Grain worker start-up: end this worker when the trainer process ends (a SIGKILLed trainer otherwise
    leaves its workers behind, blocked on a full queue nobody reads).

    A daemon thread checks every :data:`PARENT_POLL_S` that the worker's parent is still the trainer (an
    orphan is adopted by init or a subreaper) and ends the worker otherwise. Not the kernel's
    ``PR_SET_PDEATHSIG``: that fires when the *thread* that started the worker ends, and Grain starts its
    workers from prefetch threads that its ``close()`` joins, so every worker was SIGKILLed at the end of
    every run while it handed a batch over, and the shared-memory blocks it had made leaked
    (multiprocessing's "resource_tracker: There appear to be N leaked shared_memory objects" at exit).
    A trainer killed while the worker started (its imports take seconds on a busy host) is already gone:
    the first check, here, ends the worker at once.
    """
    if os.getppid() != trainer_pid:
        os._exit(0)  # the trainer died while this worker started: nobody will read what it makes

    def watch() -> None:
        while os.getppid() == trainer_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)  # the trainer is gone; its resource tracker removes what this worker leaves in shared memory

    threading.Thread(target=watch, name="ping-llm-trainer-watch", daemon=True).start()


MAX_AUTO_WORKERS = 16  # more processes than this only add memory: one worker reads and augments ~20k records/s


def resolve_workers(config: Config) -> int:
    """Worker processes for ``config.num_workers``: the number given, or with -1 (the default) one per core
    this process may use, at most :data:`MAX_AUTO_WORKERS`."""
    if config.num_workers >= 0:
        return config.num_workers
    return max(1, min(usable_cores(), MAX_AUTO_WORKERS))


def prefetch(ds: grain.MapDataset, config: Config, chunk: int = 1) -> grain.IterDataset:
    """Thread prefetch (``num_workers == 0``) or Grain's multiprocess prefetch (chunks come back through
    shared memory). ``config.prefetch_buffer`` counts batches; an element holds ``chunk`` of them."""
    threads = max(config.num_threads, 1)
    read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(-(-config.prefetch_buffer // chunk), threads))
    it = ds.to_iter_dataset(read)
    workers = resolve_workers(config)
    if workers > 0:
        # Grain's worker processes read absl flags; outside absl.app nobody parsed them.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2),
            worker_init_fn=functools.partial(die_with_parent, os.getpid()),
        )
    return it
