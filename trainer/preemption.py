"""Preemption: SIGTERM (a scheduler's) asks the training loop to checkpoint after the current step and stop."""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopRequest:
    """SIGTERM (a scheduler's preemption) asks the loop to checkpoint after the current step and stop."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self, sync_point: bool) -> bool:
        """Whether to stop now. Hosts get the signal at different steps, so with several processes they
        only decide together, at sync points (log steps, which synchronise anyway): all stop or none."""
        if jax.process_count() == 1:
            return self.requested
        if not sync_point:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
