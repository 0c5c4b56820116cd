"""The workers: a :class:`JobRunner` claims due jobs from the index and runs them.

Any process can host one (``serve`` does; ``dicom-node send`` does for its
own job).  The runner

- claims jobs of the kinds registered on it, oldest first, up to each kind's
  concurrency, with a lease (``[jobs].lease_seconds``) in the row, and runs
  each in a thread of its own;
- renews its leases every third of the lease and writes the handlers'
  progress a few times a second; a lease found lost (another worker took
  the job after this one stalled, or it was cancelled) stops that run
  without writing anything more;
- looks for work when woken (a job queued by this process) and otherwise
  every ``[jobs].poll_seconds`` (jobs queued by another process, retries
  coming due), and takes over at once the jobs of a dead process of this
  host (node/jobs/identity.py) and after their lease of any other;
- at shutdown stops claiming, asks running handlers to stop at a checkpoint
  and gives their jobs back to the queue, to be resumed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..config import JobSettings
from ..index import jobs
from ..index.db import database
from ..index.jobs import DONE, FAILED, INTERNAL, Job
from ..index.models import utcnow
from .identity import is_gone, new_identity
from .kinds import LOST, STOPPING, Failed, Interrupted, JobHandler, Progress, Retry
from .public import job_json

log = logging.getLogger("node.jobs")

FLUSH_S = 0.5  # progress reaches the row at most this late
# How long stop() waits for running jobs.  Each handler stops at its next checkpoint (a send or a
# retrieval aborts its association, a forward ends after the instance in flight), which takes a
# fraction of this; a thread still busy then is waiting on the network and is left behind (its
# job resumes from its row; every write is a transaction), so that a stop never hangs on a peer.
STOP_GRACE_S = 5.0


@dataclass
class _Kind:
    name: str
    handler: JobHandler
    concurrency: int | None  # None: as many as there are jobs (one per remote, ...)
    max_attempts: int
    stops_last: bool


@dataclass
class _Running:
    job: Job
    kind: _Kind
    progress: Progress
    thread: threading.Thread
    writing: threading.Lock
    ending: bool = False  # its end is being recorded: a released row is not a lost lease


class JobRunner:
    """Runs the registered kinds of jobs for one process; see the module docstring."""

    def __init__(
        self, settings: JobSettings, *, identity: str | None = None, only: set[int] | None = None
    ) -> None:
        self.settings = settings
        self.identity = identity or new_identity()
        self._only = only
        self._kinds: dict[str, _Kind] = {}
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._finished = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- set-up ------------------------------------------------------------------

    def register(
        self,
        kind: str,
        handler: JobHandler,
        *,
        concurrency: int | None = 1,
        max_attempts: int = 10,
        stops_last: bool = False,
    ) -> None:
        """Run jobs of *kind* with *handler*: at most *concurrency* at once in this process.

        *max_attempts* bounds :class:`~node.jobs.kinds.Retry`; a kind that
        *stops_last* keeps running at shutdown until :meth:`stop` (forwarding
        what arrives while associations drain).
        """
        self._kinds[kind] = _Kind(kind, handler, concurrency, max_attempts, stops_last)

    def start(self) -> None:
        """Start claiming (and the lease keeper)."""
        for target, name in ((self._schedule, "jobs-claim"), (self._keep, "jobs-lease")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("job worker %s running %s", self.identity, ", ".join(self._kinds) or "no kinds")

    # -- the public side ---------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once the node began to stop (no more claims; running jobs asked to stop)."""
        return self._stopping.is_set()

    def wake(self) -> None:
        """A job was queued (or a slot freed): look for work now."""
        self._wake.set()

    def submit(
        self, kind: str, key: str | None = None, payload: dict | None = None, **fields
    ) -> tuple[Job, bool]:
        """Queue a job (see :func:`node.index.jobs.submit`) and wake the workers."""
        job, created = jobs.submit(kind, key, payload, **fields)
        if created:
            self.wake()
        return job, created

    def cancel(self, job_id: int, message: str = "cancelled") -> bool:
        """Cancel a queued or running job; one running here stops at its next checkpoint."""
        changed = jobs.cancel(job_id, message)
        with self._lock:
            running = self._running.get(job_id)
        if running is not None:
            running.progress.cancel(LOST)
        return changed

    def describe(self, job: Job) -> dict[str, Any]:
        """The public JSON form of *job*, with its kind's own fields."""
        kind = self._kinds.get(job.kind)
        details = getattr(kind.handler, "details", None) if kind else None
        return job_json(job, details(job) if details else None)

    def progress_of(self, job_id: int) -> Progress | None:
        """The progress handle of a job running in this process, or None."""
        with self._lock:
            running = self._running.get(job_id)
        return running.progress if running else None

    # -- stopping ----------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming and ask running jobs to stop at a checkpoint (from a signal handler)."""
        self._stopping.set()
        self._wake.set()
        for running in self._snapshot():
            if not running.kind.stops_last:
                running.progress.cancel(STOPPING)

    def stop(self, timeout: float = STOP_GRACE_S) -> bool:
        """Stop every job (they go back to the queue) and wait up to *timeout* in all; True if all ended."""
        self.request_stop()
        for running in self._snapshot():
            running.progress.cancel(STOPPING)
        deadline = time.monotonic() + timeout
        for running in self._snapshot():
            running.thread.join(max(0.0, deadline - time.monotonic()))
        busy = [r for r in self._snapshot() if r.thread.is_alive()]
        for running in busy:
            log.warning(
                "job %d (%s) still busy after %.0fs, left behind; it resumes when its lease runs out",
                running.job.id,
                running.kind.name,
                timeout,
            )
        self._finished.set()
        # The claiming thread may be waiting on the index (a lock another node holds): no longer
        # than the deadline, as for the jobs.
        for thread in self._threads:
            thread.join(max(0.5, deadline - time.monotonic()))
        return not busy

    # -- claiming ----------------------------------------------------------------

    def _snapshot(self) -> list[_Running]:
        with self._lock:
            return list(self._running.values())

    def _schedule(self) -> None:
        poll = self.settings.poll_seconds
        while not self._stopping.is_set():
            self._wake.clear()
            timeout = poll
            try:
                self._take_back_from_the_dead()
                self._claim()
                due = jobs.next_due(list(self._kinds))
                if due is not None:
                    timeout = min(poll, max(0.01, (due - utcnow()).total_seconds()))
            except Exception:  # noqa: BLE001 - a bad moment of the index must not end claiming
                log.exception("job worker %s: claiming failed; trying again", self.identity)
            self._wake.wait(timeout)
        database.close()

    def _take_back_from_the_dead(self) -> None:
        for job_id, holder in jobs.held_by_others(self.identity, list(self._kinds)):
            if holder and is_gone(holder) and jobs.expire(job_id, holder):
                log.info("job %d: its worker %s is gone; taking it over", job_id, holder)

    def _claim(self) -> None:
        for kind in self._kinds.values():
            if self._stopping.is_set():
                return
            with self._lock:
                busy = sum(1 for r in self._running.values() if r.kind is kind)
            free = 1_000 if kind.concurrency is None else kind.concurrency - busy
            for job in jobs.claim(
                self.identity, kind.name, free, self.settings.lease_seconds, only=self._only
            ):
                self._start(kind, job)

    def _start(self, kind: _Kind, job: Job) -> None:
        progress = Progress(job, self._flush_progress)
        thread = threading.Thread(target=self._execute, args=(job.id,), name=f"job-{kind.name}-{job.id}")
        thread.daemon = True
        with self._lock:
            self._running[job.id] = _Running(job, kind, progress, thread, threading.Lock())
        if self._stopping.is_set() and not kind.stops_last:
            progress.cancel(STOPPING)
        thread.start()

    # -- running -----------------------------------------------------------------

    def _execute(self, job_id: int) -> None:
        with self._lock:
            running = self._running[job_id]
        job, kind, progress = running.job, running.kind, running.progress
        log.info(
            "job %d (%s%s) started by %s, attempt %d",
            job.id,
            kind.name,
            f" {job.key}" if job.key else "",
            self.identity,
            job.attempts,
        )
        outcome: BaseException | None = None
        try:
            kind.handler.run(job, progress)
        except BaseException as exc:  # noqa: BLE001 - every end is recorded
            outcome = exc
        try:
            self._conclude(running, outcome)
        except Exception:  # noqa: BLE001 - the row stays claimed; its lease runs out
            log.exception("job %d: could not record its end", job.id)
        finally:
            with self._lock:
                self._running.pop(job.id, None)
            database.close()
            self._wake.set()

    def _conclude(self, running: _Running, outcome: BaseException | None) -> None:
        job, kind, progress = running.job, running.kind, running.progress
        running.ending = True
        name = f"job {job.id} ({kind.name}{f' {job.key}' if job.key else ''})"
        if progress.reason == LOST:
            log.info("%s: stopped here; it was cancelled or another worker holds it", name)
            return
        if isinstance(outcome, Interrupted) or (outcome is not None and progress.cancelled):
            self._release(running, {})
            log.info("%s: interrupted; queued again to resume", name)
            return
        if outcome is None:
            self._finish(running, DONE, {})
            return
        if isinstance(outcome, Retry):
            if job.attempts >= kind.max_attempts:
                message = f"{outcome} (gave up after {job.attempts} attempts)"
                self._finish(running, FAILED, {"failure": outcome.failure, "message": message})
                log.warning("%s failed: %s", name, message)
                return
            at = utcnow() + dt.timedelta(seconds=outcome.delay_s)
            message = f"{outcome}; attempt {job.attempts + 1} at {at.isoformat(timespec='seconds')}Z"
            self._release(running, {"message": message}, not_before=at)
            log.warning("%s: %s", name, message)
            return
        if isinstance(outcome, Failed):
            fields = {"failure": outcome.failure, "message": str(outcome)}
        else:
            log.error("%s crashed", name, exc_info=outcome)
            fields = {"failure": INTERNAL, "message": f"internal error: {outcome}"}
        self._finish(running, FAILED, fields)
        log.warning("%s failed: %s", name, fields["message"])

    def _finish(self, running: _Running, state: str, fields: dict[str, Any]) -> None:
        with running.writing:
            jobs.finish(running.job.id, self.identity, state, {**running.progress.take(), **fields})

    def _release(
        self, running: _Running, fields: dict[str, Any], not_before: dt.datetime | None = None
    ) -> None:
        with running.writing:
            jobs.release(running.job.id, self.identity, {**running.progress.take(), **fields}, not_before)

    def _flush_progress(self, progress: Progress) -> bool:
        with self._lock:
            running = self._running.get(progress.job_id)
        return running is not None and self._flush(running)

    def _flush(self, running: _Running) -> bool:
        """Write a job's pending progress; False (and the job told to stop) if it was lost."""
        with running.writing:
            fields = running.progress.take()
            if not fields:
                return True
            try:
                held = jobs.save(running.job.id, self.identity, fields)
            except Exception:  # noqa: BLE001 - try again at the next flush
                running.progress.restore(fields)
                log.exception("job %d: could not write its progress", running.job.id)
                return True
        if not held:
            self._lost(running)
        return held

    def _lost(self, running: _Running) -> None:
        if not running.progress.cancelled:
            log.warning(
                "job %d (%s): no longer held by %s (cancelled, or taken over after the lease ran out)",
                running.job.id,
                running.kind.name,
                self.identity,
            )
        running.progress.cancel(LOST)

    def _keep(self) -> None:
        """Write progress often and renew leases every third of their length, until stopped."""
        renew_every = self.settings.lease_seconds / 3
        renewed = time.monotonic()
        while not self._finished.wait(min(FLUSH_S, renew_every / 2)):
            for running in self._snapshot():
                self._flush(running)
            if time.monotonic() - renewed < renew_every:
                continue
            renewed = time.monotonic()
            held = {r.job.id: r for r in self._snapshot()}
            try:
                kept = jobs.renew(self.identity, held, self.settings.lease_seconds)
            except Exception:  # noqa: BLE001 - the lease may still hold at the next try
                log.exception("job worker %s: could not renew its leases", self.identity)
                continue
            for job_id, running in held.items():
                # A job that ended meanwhile is not lost: it released its row itself.
                if job_id not in kept and not running.ending:
                    self._lost(running)
        database.close()
