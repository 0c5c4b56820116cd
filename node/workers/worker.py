"""A worker process's entry point: ``python -m node.workers.worker`` with its WorkerSpec on stdin."""

from __future__ import annotations

import pickle
import signal
import sys

from ..cli import setup_logging
from .spec import WorkerSpec


def main() -> int:
    """Serve the node on the inherited sockets until SIGTERM; the exit code of ``serve``."""
    # Ctrl-C in a terminal reaches the supervisor, which stops the workers (a second
    # signal here would make uvicorn skip the graceful shutdown).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec: WorkerSpec = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    setup_logging(spec.log_level, tag=f"w{spec.index}")
    from ..server import serve  # after the logging: importing the node logs nothing, serving does

    return serve(spec.settings, worker=spec)


if __name__ == "__main__":
    raise SystemExit(main())
