"""Checkpoints: an Orbax ``CheckpointManager`` holding, per step,

* ``state``: parameters, optimizer state, step and RNG key (a pytree, ``StandardSave``);
* ``data_iter``: the Grain iterator state, one small JSON file per host (Grain's Orbax handler);
* ``meta``: the config, the dataset version read with its fingerprint, and the stream's segments (JSON).

Orbax writes each step under a temporary name and renames it when every item is written, so a
checkpoint interrupted by a crash or SIGKILL is never listed (and its leftovers are removed at start).
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import orbax.checkpoint as ocp


class IteratorSnapshot:
    """A frozen copy of an iterator's state that Grain's checkpoint handler can save and restore.

    The trainer snapshots the iterator right after the step it checkpoints, so an asynchronous save
    never sees batches fetched later.
    """

    def __init__(self, state: Any = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state, sort_keys=True).encode()

    def set_state(self, raw: bytes) -> None:
        self.state = json.loads(raw)

    def start_prefetch(self) -> None:
        """Part of the interface Grain's handler calls after ``set_state``; nothing to start."""


class Checkpointer:
    """Save and restore training checkpoints under ``directory`` (keeps the last ``keep``)."""

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, iterator_state: Any, meta: dict) -> None:
        """Save (possibly in the background); ``iterator_state`` is the JSON-able ``get_state()`` of the iterator."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_iter=grain.checkpoint.CheckpointSave(IteratorSnapshot(iterator_state)),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def read_meta(self, step: int) -> dict:
        """The ``meta`` item (config, data_version, fingerprint, data_segments) of a checkpoint, without
        touching the arrays."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
        """(state, iterator_state) of a checkpoint; ``abstract_state`` gives shapes, dtypes and shardings."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data_iter=grain.checkpoint.CheckpointRestore(IteratorSnapshot()),
            ),
        )
        return restored["state"], restored["data_iter"].state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
