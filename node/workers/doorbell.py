"""Wake-ups between the worker processes of one node: a Unix datagram socket each.

An instance stored by one worker queues outbox rows for a forward job that
another worker may hold; without a wake-up that worker would see them only at
its next poll (``[jobs].poll_seconds``).  Each worker binds a datagram socket
named after its pid in a folder of the supervisor's run folder; ringing sends
a short topic (``forward:NAME``) to every other one.  A ring is a hint, never
the only way work is found: a full socket buffer or a worker just starting
drops it, and the poll finds the rows anyway.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("node.workers")

PEERS_TTL_S = 0.5  # how long the list of other workers' sockets is reused
MAX_TOPIC = 1024


class Doorbell:
    """This worker's doorbell in *folder*: ``ring(topic)`` reaches the others, ``on_ring`` hears theirs."""

    def __init__(self, folder: Path, on_ring: Callable[[str], None]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / str(os.getpid())
        self._on_ring = on_ring
        self._in = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._in.bind(str(self.path))
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)  # a busy peer's full buffer drops the hint, never blocks ingest
        self._peers: list[str] = []
        self._peers_at = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._listen, name="doorbell", daemon=True)
        self._thread.start()

    def ring(self, topic: str) -> None:
        """Tell every other worker about *topic* (best effort)."""
        data = topic.encode()
        for peer in self._others():
            try:
                self._out.sendto(data, peer)
            except (BlockingIOError, FileNotFoundError, ConnectionRefusedError):
                pass  # busy, or a worker that just ended: it polls, or is gone

    def _others(self) -> list[str]:
        now = time.monotonic()
        if now - self._peers_at > PEERS_TTL_S:
            own = self.path.name
            try:
                names = [n for n in os.listdir(self.folder) if n != own]
            except OSError:
                names = []
            self._peers = [str(self.folder / n) for n in names]
            self._peers_at = now
        return self._peers

    def _listen(self) -> None:
        while not self._closed:
            try:
                data = self._in.recv(MAX_TOPIC)
            except OSError:
                return  # closed
            try:
                self._on_ring(data.decode(errors="replace"))
            except Exception:  # noqa: BLE001 - a bad hint must not end the listener
                log.exception("doorbell: handling %r failed", data[:80])

    def close(self) -> None:
        """Stop listening and remove this worker's socket."""
        self._closed = True
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self._in.close()
        self._out.close()
