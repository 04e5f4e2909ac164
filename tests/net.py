"""Network helpers shared by tests that start servers (moto's S3, the jax.distributed coordinator)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port that nothing listens on now (the kernel's pick). A fixed or pid-derived port can be
    one another process holds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
