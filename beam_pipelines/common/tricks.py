"""The switches that turn off the jobs' process tricks, each read here and nowhere else.

Each trick leans on behaviour of Beam or CPython that is not public API, so a Beam or Python upgrade may
break it. Setting its variable to ``1`` makes the jobs do the plain thing instead (same outputs, byte for
byte): the fallback while the trick is mended.

=========================  =====================================================================
``PING_LLM_PLAIN_RUNNER``  Beam's ``DirectRunner`` instead of the ``LocalRunner`` (same running mode)
``PING_LLM_PLAIN_WORKERS`` no warm worker processes started ahead (the runner starts its own)
``PING_LLM_PLAIN_EXIT``    a normal interpreter exit instead of ``os._exit`` after the exit handlers
``PING_LLM_PLAIN_MALLOC``  glibc's default ``malloc`` thresholds (no ``mallopt``)
=========================  =====================================================================
"""

from __future__ import annotations

import os

PLAIN_RUNNER = "PING_LLM_PLAIN_RUNNER"
PLAIN_WORKERS = "PING_LLM_PLAIN_WORKERS"
PLAIN_EXIT = "PING_LLM_PLAIN_EXIT"
PLAIN_MALLOC = "PING_LLM_PLAIN_MALLOC"
SWITCHES = (PLAIN_RUNNER, PLAIN_WORKERS, PLAIN_EXIT, PLAIN_MALLOC)


def plain(switch: str) -> bool:
    """Whether the trick of ``switch`` (one of :data:`SWITCHES`) is turned off: its variable is set and not ``0``."""
    return os.environ.get(switch, "") not in ("", "0")
