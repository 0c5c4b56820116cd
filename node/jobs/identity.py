"""Who holds a job: a worker identity, and whether a worker on this host is gone.

The identity is ``host:pid:random``: the host and process make the logs and
``GET /jobs`` readable, the random part keeps two runners of one process
(or a reused pid) apart.  A worker's lease is what other processes trust;
the liveness check only lets a restarted node take back at once the jobs a
killed process of the *same host* held, instead of waiting for their leases
to run out.  Nodes that share an index must therefore have distinct host
names.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path


def new_identity() -> str:
    """A fresh worker identity for this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    try:
        # A killed process its parent has not reaped yet is a zombie: gone all the same.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def is_gone(identity: str) -> bool:
    """True only when *identity* is a process of this host that no longer runs."""
    host, sep, rest = identity.partition(":")
    pid_text = rest.split(":", 1)[0]
    if not sep or host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not _pid_alive(pid)
