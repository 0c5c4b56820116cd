"""What a job kind is: a handler, the progress handle it reports through, and how it ends.

A kind is one registration on the :class:`~node.jobs.runner.JobRunner`:
a name and an object with ``run(job, progress)``.  ``run`` is called in a
thread of its own with the claimed row; it reports through *progress*
(counts, bytes, phase, message, payload fields; written to the row by the
runner a few times a second, or at once with ``flush=True``) and ends by:

- returning: the job is ``done``;
- raising :class:`Failed`: ``failed`` for good, with the reason;
- raising :class:`Retry`: queued again after a delay (``not_before``), and
  ``failed`` once the kind's attempts are used up;
- raising :class:`Interrupted` (or anything, once ``progress.cancelled``):
  given back to the queue as it is, to be resumed by the next worker.

A handler checks ``progress.cancelled`` at its checkpoints (or registers
``progress.on_cancel`` to abort blocking work): it is set when the node
stops, when the job is cancelled, and when the lease was lost to another
worker (then nothing more of this run is written to the row).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..index.jobs import INTERNAL, Job

# Why a handler is asked to stop (``Progress.reason``).
STOPPING = "stopping"  # the node is shutting down: leave the job resumable
LOST = "lost"  # another worker holds the job now, or it was cancelled


class Failed(Exception):
    """The job failed for good: *failure* is a word (``remote``, ``partial``...), the message says why."""

    def __init__(self, failure: str, message: str) -> None:
        super().__init__(message)
        self.failure = failure or INTERNAL


class Retry(Exception):
    """Try the job again after *delay_s* seconds (the kind's ``max_attempts`` bound the retries)."""

    def __init__(self, failure: str, message: str, delay_s: float) -> None:
        super().__init__(message)
        self.failure = failure
        self.delay_s = delay_s


class Interrupted(Exception):
    """Stopped at a checkpoint: the job goes back to the queue as it is, to be resumed."""


class JobHandler(Protocol):
    """One kind of job."""

    def run(self, job: Job, progress: Progress) -> None:
        """Do the job (or the part left of it); see the module's docstring for how it ends."""


class Progress:
    """A running job's link to its row: progress to write, and the signal to stop."""

    def __init__(self, job: Job, flush: Callable[[Progress], bool]) -> None:
        # *flush* writes what is pending to the row; False when the job is no longer held.
        self.job_id = job.id
        self.reason = ""
        self._flush = flush
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._payload: dict[str, Any] = job.data
        self._cancel = threading.Event()
        self._callbacks: list[Callable[[], None]] = []

    # -- reporting --------------------------------------------------------------

    def update(self, *, flush: bool = False, payload: dict[str, Any] | None = None, **fields: Any) -> None:
        """Record progress: ``done``, ``failed``, ``total``, ``bytes``, ``phase``, ``message``, ``failure``,
        and *payload* keys (merged into the kind's fields).

        Written within a fraction of a second; with *flush*, before this
        returns (a phase that later steps rely on).  A flush that finds the
        job taken by another worker raises :class:`Interrupted`.
        """
        with self._lock:
            self._pending.update(fields)
            if payload:
                self._payload.update(payload)
                self._pending["payload"] = dict(self._payload)
        if flush and not self._flush(self):
            raise Interrupted("the job is no longer held by this worker")

    @property
    def payload(self) -> dict[str, Any]:
        """The kind's fields as this run knows them (a copy)."""
        with self._lock:
            return dict(self._payload)

    def take(self) -> dict[str, Any]:
        """The fields not yet written, emptied (the runner's side)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            return pending

    def restore(self, fields: dict[str, Any]) -> None:
        """Put back fields a failed write did not store (newer values win)."""
        with self._lock:
            self._pending = {**fields, **self._pending}

    # -- stopping ---------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to *timeout* seconds; True if the job was asked to stop meanwhile."""
        return self._cancel.wait(timeout)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call *callback* (from another thread) when the job is asked to stop; at once if it was."""
        with self._lock:
            self._callbacks.append(callback)
            now = self._cancel.is_set()
        if now:
            callback()

    def cancel(self, reason: str) -> None:
        """Ask the handler to stop (the runner's side)."""
        with self._lock:
            if self._cancel.is_set():
                return
            self.reason = reason
            self._cancel.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - aborting must not fail the stop
                pass
