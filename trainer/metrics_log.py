"""The training log: ``workdir/metrics.jsonl`` (one JSON object per logged step) and TensorBoard events."""

from __future__ import annotations

import json
import os

from beam_pipelines.common.files import atomic_path

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per logged step) plus TensorBoard events; primary host only."""

    def __init__(self, workdir: str, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self.writer = None
        if not enabled:
            return
        # Keep only what the checkpoint we resume from has seen: a killed run may have logged steps
        # past its last checkpoint (and maybe half a line); they are replayed identically.
        kept = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    if record.get("step", 0) <= resume_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
        with atomic_path(self.path) as tmp, open(tmp, "w") as f:
            f.writelines(kept)
        self.file = open(self.path, "a")
        try:
            # tensorboardX imported here: 1.0-1.8 s of start-up after JAX (python -X importtime, 2-core shared
            # machine) that read_metrics and the other hosts never need
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            self.writer = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``workdir/metrics.jsonl``."""
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]
