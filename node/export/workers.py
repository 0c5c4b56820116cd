"""A bounded pool of worker threads running jobs by row id.

A job id is queued at most once at a time: a second submit while it waits
is a no-op, and one while it runs makes it run once more afterwards (the
row may have been reset meanwhile); two threads never run the same job.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class WorkerPool:
    """*size* threads calling *run(job_id)* for every submitted id."""

    def __init__(self, run: Callable[[int], None], size: int, name: str = "worker") -> None:
        self._run = run
        self._size = size
        self._name = name
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._waiting: set[int] = set()
        self._running: set[int] = set()
        self._again: set[int] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self._size):
            thread = threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job_id: int) -> None:
        """Run *job_id* soon, unless it is already waiting or running."""
        with self._lock:
            if job_id in self._waiting:
                return
            if job_id in self._running:
                self._again.add(job_id)
                return
            self._waiting.add(job_id)
        self._queue.put(job_id)

    def stop(self, timeout: float) -> bool:
        """Let running jobs return, drop waiting ones; True if every thread ended in time."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                self._waiting.discard(job_id)
                self._running.add(job_id)
            try:
                self._run(job_id)
            except Exception:  # noqa: BLE001 - a job's failure must not kill its worker
                log.exception("%s job %s crashed", self._name, job_id)
            finally:
                with self._lock:
                    self._running.discard(job_id)
                    again = job_id in self._again
                    self._again.discard(job_id)
                if again:
                    self.submit(job_id)
