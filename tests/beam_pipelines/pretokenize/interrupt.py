"""Run pretokenize and stop it at a chosen point, for the crash and concurrency tests.

    python tests/beam_pipelines/pretokenize/interrupt.py POINT [pretokenize arguments]

POINT:
- ``kill-after-records``: SIGKILL this process once the first bucket's records file is written (scratch only);
- ``kill-before-manifest``: SIGKILL it right before the manifest is written, every new file already at its
  final name (the latest point an append can die at without completing);
- ``wait-before-manifest:READY:GO``: before writing the manifest, create the file READY and wait until the
  file GO exists (the run holds the writer lock meanwhile).

The hooks wrap module attributes that the pipeline calls at run time; run with
``--direct_running_mode=in_memory`` so the stages run in this process.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from beam_pipelines.common import storage
from beam_pipelines.pretokenize import pipeline, stages


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(point: str, argv: list[str]) -> int:
    if point == "kill-after-records":
        write = stages.write_bucket_records

        def write_then_die(*args, **kwargs):
            write(*args, **kwargs)
            _kill()

        stages.write_bucket_records = write_then_die
    elif point == "kill-before-manifest" or point.startswith("wait-before-manifest:"):
        write_json = storage.write_json

        def before_manifest(path, obj):
            if os.path.basename(path) == "manifest.json":
                if point == "kill-before-manifest":
                    _kill()
                _, ready, go = point.split(":")
                open(ready, "w").close()
                while not os.path.exists(go):
                    time.sleep(0.02)
            write_json(path, obj)

        storage.write_json = before_manifest
    else:
        raise SystemExit(f"unknown point {point!r}")
    return pipeline.run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
