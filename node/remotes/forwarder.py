"""Store-and-forward: one "forward" job per remote with ``forward = true``.

The job (node/jobs, keyed by the remote's name) lives as long as the remote
forwards; whichever process holds its lease runs a :class:`ForwardWorker`
for it, so exactly one process forwards to each remote, and another takes
over when that one stops or dies.  The worker drains its remote's outbox
rows (node/index/outbox.py) in bounded batches over one association that it
keeps while there is work, proposing each instance's stored transfer syntax
(node/remotes/sender.py).
A row is settled only from the remote's answer:

- success or warning -> ``done``;
- a permanent refusal (SOP class not supported, not authorised, data set
  does not match, cannot understand, no accepted presentation context) ->
  ``failed`` at once, kept for ``dicom-node forward --retry``;
- any other failure status -> pending again after a per-row back-off, and
  ``failed`` after :data:`MAX_ATTEMPTS` such answers;
- no answer at all (remote down, association refused or broken) or "out of
  resources" (0xA7xx) -> the row stays pending untouched and the whole
  worker backs off exponentially (1 s doubling to 5 min) before it tries
  again.

The worker publishes its state (last success and error, next retry, count
sent) in the job row, so that ``GET /remotes`` and ``dicom-node forward``
show it from any process.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pynetdicom import Association

from .. import metrics
from ..config import Remote
from ..context import NodeContext
from ..index import jobs, outbox
from ..index.jobs import ACTIVE_STATES, RUNNING, Job
from ..index.models import utcnow
from ..index.outbox import DONE, FAILED, PENDING, Queued, Settlement
from ..jobs.kinds import Failed, Interrupted, Progress
from ..jobs.public import iso
from ..jobs.runner import JobRunner
from ..statuses import NOT_AUTHORIZED, SOP_CLASS_NOT_SUPPORTED, is_out_of_resources
from .sender import (
    NoAcceptedContext,
    Outgoing,
    Peer,
    SendError,
    Sent,
    can_send,
    contexts_for,
    open_association,
    outgoing,
    store_one,
    transcoded_note,
)

log = logging.getLogger("node.forward")

BATCH_SIZE = 64
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 300.0
FLUSH_ROWS = 256  # answers saved to the outbox at least every this many rows
FLUSH_S = 1.0  # ... or this many seconds
LINGER_S = 0.02  # after a short batch, wait this long for more rows
MAX_ATTEMPTS = 5  # failure answers (not outages) before a row is given up
IDLE_RELEASE_S = 2.0  # keep the association this long after the queue empties
KIND = "forward"
MAX_REMEMBERED_CLASSES = 64  # SOP classes proposed again on a reopened association

# C-STORE failures that will not change by sending again (PS3.4 B.2.3, PS3.7 C).
PERMANENT_STATUSES = {SOP_CLASS_NOT_SUPPORTED, NOT_AUTHORIZED, 0x0117, 0x0111}
WARNING_STATUSES = {0x0107, 0x0116}


def is_permanent(status: int) -> bool:
    """True for a refusal that retrying cannot fix (SOP class, authorisation, data set)."""
    return status in PERMANENT_STATUSES or status & 0xFF00 == 0xA900 or status & 0xF000 == 0xC000


def is_accepted(sent: Sent) -> bool:
    """The remote kept the instance: success or a warning status."""
    return sent.ok or sent.status in WARNING_STATUSES


def backoff_s(failures: int) -> float:
    """Exponential back-off after *failures* consecutive failures, capped."""
    return min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** max(0, failures - 1))


@dataclass
class WorkerStatus:
    """What a worker knows beyond the rows: shown by ``GET /remotes``, kept in its job's payload."""

    sending: bool = False
    sent: int = 0  # instances accepted since this worker took the job
    last_success: dt.datetime | None = None
    last_error: str = ""
    last_error_at: dt.datetime | None = None
    next_retry: dt.datetime | None = None
    consecutive_failures: int = 0

    def to_payload(self) -> dict:
        return {
            "sending": self.sending,
            "sent": self.sent,
            "last_success": iso(self.last_success),
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "next_retry": iso(self.next_retry),
            "consecutive_failures": self.consecutive_failures,
        }

    @classmethod
    def from_payload(cls, data: dict) -> WorkerStatus:
        def when(key: str) -> dt.datetime | None:
            value = data.get(key)
            return dt.datetime.fromisoformat(value.rstrip("Z")) if value else None

        return cls(
            sending=bool(data.get("sending")),
            sent=int(data.get("sent") or 0),
            last_success=when("last_success"),
            last_error=data.get("last_error") or "",
            last_error_at=when("last_error_at"),
            next_retry=when("next_retry"),
            consecutive_failures=int(data.get("consecutive_failures") or 0),
        )


@dataclass
class _Link:
    """The association kept open toward the remote and what it was negotiated for."""

    assoc: Association
    proposed: set[tuple[str, str]] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)
    opened: float = field(default_factory=time.monotonic)
    counts: dict[str, int] = field(default_factory=dict)


def has_context(assoc: Association, item: Outgoing) -> bool:
    """The remote accepted a context this item can go over (as stored, or converted)."""
    return can_send(assoc, item)


def _wanted(item: Outgoing) -> tuple[str, str]:
    return (item.sop_class_uid, item.transfer_syntax)


class ForwardWorker:
    """Sends one remote's outbox rows in its job's thread; ``wake()`` after new rows, ``stop()`` to finish."""

    def __init__(self, ctx: NodeContext, remote: Remote, progress: Progress | None = None) -> None:
        self.ctx = ctx
        self.remote = remote
        self.peer = Peer(remote.ae_title, remote.host, remote.port)
        self.status = WorkerStatus()
        self.progress = progress
        self.sent_before = 0  # instances sent for this remote by the job's earlier holders
        self.poll_s = ctx.settings.jobs.poll_seconds  # rows queued by another process (import, a node)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._link: _Link | None = None
        # Representative items of recent (SOP class, syntax) pairs, proposed
        # again when the association is reopened so it can be reused longer.
        self._recent: dict[tuple[str, str], Outgoing] = {}

    # -- control -------------------------------------------------------------

    def wake(self) -> None:
        """New rows were queued: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the instance in flight, save the answers, then exit (the rest stay pending)."""
        self._stopping.set()
        self._wake.set()

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        # Answers not yet written to the outbox.  They are written in groups
        # (every FLUSH_ROWS rows or FLUSH_S seconds, and before any wait), so
        # that forwarding adds few commits beside the ingest path's; a crash
        # before the write only means those instances are sent again.
        unsaved: list[Settlement] = []
        since = 0.0
        while True:
            try:
                if self._stopping.is_set():
                    self._save(unsaved)
                    break
                wait = self._backoff_left()
                if wait > 0:
                    unsaved = self._save(unsaved)
                    self._stopping.wait(wait)
                    continue
                self._wake.clear()
                flush = len(unsaved) >= FLUSH_ROWS or (unsaved and time.monotonic() - since >= FLUSH_S)
                if flush:
                    batch = outbox.settle_and_fetch(self.remote.name, unsaved, BATCH_SIZE)
                    unsaved = []
                else:
                    # Rows answered but not yet saved still read as pending: read past them
                    # (rows are sent in id order; an older row due again waits for the save).
                    after = max((s.row.id for s in unsaved), default=0)
                    batch = outbox.settle_and_fetch(self.remote.name, (), BATCH_SIZE, after_id=after)
                if batch:
                    if not unsaved:
                        since = time.monotonic()
                    unsaved += self._send(batch)
                    if len(batch) < BATCH_SIZE:
                        # Instances are trickling in: let a few gather so that the
                        # per-batch work (a transaction, a query) is shared.
                        self._stopping.wait(LINGER_S)
                    continue
                if unsaved:
                    # Nothing more to send yet: save when the group is due, not per instance.
                    left = FLUSH_S - (time.monotonic() - since)
                    if left <= 0:
                        unsaved = self._save(unsaved)
                    else:
                        self._wake.wait(left)
                    continue
                self._idle()
            except Exception:  # noqa: BLE001 - the worker must outlive a bad moment
                log.exception("forwarding to %s: unexpected error; retrying", self.remote.name)
                self._note_error("internal error (see the log)")
                self._close()
                self._stopping.wait(BACKOFF_MIN_S)
        self._close()
        self._publish()

    def _save(self, settled: list[Settlement]) -> list[Settlement]:
        if settled:
            outbox.settle_and_fetch(self.remote.name, settled, 0)
        return []

    def _backoff_left(self) -> float:
        if self.status.next_retry is None:
            return 0.0
        return (self.status.next_retry - utcnow()).total_seconds()

    def _idle(self) -> None:
        """Nothing due: keep the association briefly, then wait for a wake-up."""
        timeout = self.poll_s
        due = outbox.next_due(self.remote.name)
        if due is not None:
            timeout = min(timeout, max(0.05, (due - utcnow()).total_seconds()))
        if self._link is not None:
            idle_left = IDLE_RELEASE_S - (time.monotonic() - self._link.last_used)
            if idle_left <= 0:
                self._close()
            else:
                timeout = min(timeout, idle_left)
        self._wake.wait(timeout)

    # -- sending -------------------------------------------------------------

    def _send(self, batch: Sequence[Queued]) -> list[Settlement]:
        items = [outgoing(self.ctx.store, q) for q in batch]
        self.status.sending = True
        try:
            return self._send_items(batch, items, retry_fresh=self._link is not None)
        finally:
            self.status.sending = False
            self._publish()

    def _send_items(
        self, batch: Sequence[Queued], items: list[Outgoing], *, retry_fresh: bool
    ) -> list[Settlement]:
        try:
            link = self._association(items)
        except NoAcceptedContext as exc:
            # Reachable, but it takes none of these: a permanent refusal of the whole batch.
            self._note_error(str(exc))
            log.warning(
                "forwarding to %s: %d instance(s) refused for good: %s", self.remote.name, len(batch), exc
            )
            return [Settlement(q, FAILED, error=str(exc)) for q in batch]
        except SendError as exc:
            self._remote_down(str(exc))
            return []
        settled: list[Settlement] = []
        outage = False
        for q, item in zip(batch, items, strict=True):
            if self._stopping.is_set():
                break  # the node is stopping: the rows not sent yet stay pending, as they are
            if not item.path.exists():
                settled.append(Settlement(q, FAILED, error="the instance file is missing from the store"))
                continue
            sent = store_one(link.assoc, item)
            link.last_used = time.monotonic()
            if (
                sent.status is None
                and not sent.refused
                and (not link.assoc.is_established or has_context(link.assoc, item))
            ):
                # No answer although it could be sent: the association broke (pynetdicom
                # may not have marked it yet).
                link.assoc.abort()
                self._close()
                if retry_fresh and not settled:
                    # A kept association may have been closed by the peer while idle.
                    return self._send_items(batch, items, retry_fresh=False)
                self._remote_down(sent.error or "association lost")
                outage = True
                break
            if sent.status is not None and is_out_of_resources(sent.status):
                # The remote is full: wait like for an outage; the row keeps its attempts.
                comment = f" ({sent.error})" if sent.error else ""
                self._remote_down(f"out of resources, status 0x{sent.status:04X}{comment}")
                outage = True
                break
            settlement = self._judge(q, sent)
            link.counts[settlement.state] = link.counts.get(settlement.state, 0) + 1
            settled.append(settlement)
        if any(s.state == DONE for s in settled):
            if outage:
                # Some went before the outage in this batch: a success, but keep backing off.
                self.status.last_success = utcnow()
            else:
                self._remote_up()
        return settled

    def _judge(self, q: Queued, sent: Sent) -> Settlement:
        """Turn the remote's answer for one instance into a settlement."""
        if is_accepted(sent):
            self.status.sent += 1
            metrics.forwarded(self.remote.name)
            return Settlement(q, DONE, status=sent.status)
        if sent.status is None:
            # Association still up but nothing sent: no accepted context for
            # what we proposed, so the remote does not take this kind of object.
            error = sent.error or "not sent"
            self._note_error(f"{q.sop_uid}: {error}")
            return Settlement(q, FAILED, error=error)
        error = f"status 0x{sent.status:04X}" + (f": {sent.error}" if sent.error else "")
        self._note_error(f"{q.sop_uid}: {error}")
        if is_permanent(sent.status) or q.attempts + 1 >= MAX_ATTEMPTS:
            log.warning("forwarding %s to %s failed for good: %s", q.sop_uid, self.remote.name, error)
            return Settlement(q, FAILED, status=sent.status, error=error)
        retry_at = utcnow() + dt.timedelta(seconds=backoff_s(q.attempts + 1))
        return Settlement(q, PENDING, status=sent.status, error=error, not_before=retry_at)

    def _association(self, items: Sequence[Outgoing]) -> _Link:
        """The kept association if it was negotiated for *items*, else a new one."""
        needed = {_wanted(i) for i in items}
        link = self._link
        if link is not None and link.assoc.is_established and needed <= link.proposed:
            return link
        self._close()
        for item in items:
            self._recent.pop(_wanted(item), None)
            self._recent[_wanted(item)] = item
        while len({sop for sop, _ in self._recent}) > MAX_REMEMBERED_CLASSES:
            self._recent.pop(next(iter(self._recent)))
        # The batch's own pairs come first so that they are never cut off.
        candidates = list(items) + [i for k, i in self._recent.items() if k not in needed]
        contexts = contexts_for(candidates)
        assoc = open_association(
            self.peer, self.ctx.settings.dicom.ae_title, contexts, max_pdu=self.ctx.settings.dicom.max_pdu
        )
        proposed = {(cx.abstract_syntax, ts) for cx in contexts for ts in cx.transfer_syntax}
        self._link = _Link(assoc, proposed)
        return self._link

    def _close(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        ending = "released" if link.assoc.is_established else "aborted"
        try:
            if link.assoc.is_established:
                link.assoc.release()
            else:
                link.assoc.abort()
        except Exception:  # noqa: BLE001 - closing a dead link must not fail
            pass
        names = {DONE: "forwarded", FAILED: "refused", PENDING: "to retry"}
        done = ", ".join(f"{n} {names[k]}" for k, n in sorted(link.counts.items())) or "nothing sent"
        log.log(  # refused for good: an operator must act (dicom-node forward --retry)
            logging.WARNING if link.counts.get(FAILED) else logging.INFO,
            "association %s to %s: %s%s; %s in %.2fs",
            self.ctx.settings.dicom.ae_title,
            self.peer,
            done,
            transcoded_note(link.assoc),
            ending,
            time.monotonic() - link.opened,
        )

    # -- remote state --------------------------------------------------------

    def _publish(self) -> None:
        """Hand the worker's state to its job row (written by the job runner within a second)."""
        if self.progress is not None:
            self.progress.update(
                done=self.sent_before + self.status.sent,
                message=self.status.last_error,
                payload=self.status.to_payload(),
            )

    def _note_error(self, error: str) -> None:
        self.status.last_error = error
        self.status.last_error_at = utcnow()

    def _remote_down(self, error: str) -> None:
        self.status.consecutive_failures += 1
        delay = backoff_s(self.status.consecutive_failures)
        self.status.next_retry = utcnow() + dt.timedelta(seconds=delay)
        self._note_error(error)
        log.warning("forwarding to %s: %s; retrying in %.0fs", self.remote.name, error, delay)

    def _remote_up(self) -> None:
        if self.status.consecutive_failures:
            log.info("forwarding to %s: remote reachable again", self.remote.name)
        self.status.consecutive_failures = 0
        self.status.next_retry = None
        self.status.last_success = utcnow()


class Forwarder:
    """Forwarding for one node: the outbox hook, the forward kind, and the workers running here."""

    def __init__(self, ctx: NodeContext, runner: JobRunner | None = None) -> None:
        self.ctx = ctx
        self.runner = runner
        self.remotes = {r.name: r for r in ctx.settings.remotes if r.forward}
        self._workers: dict[str, ForwardWorker] = {}
        self._lock = threading.Lock()
        # Set in a worker process (node/workers/): wakes the remote's worker in another process.
        self.elsewhere: Callable[[str], None] | None = None

    def install(self) -> None:
        """Queue every stored instance for the forwarding remotes; register and queue their jobs."""
        if self.runner is not None:
            self.runner.register(KIND, ForwardJobs(self), concurrency=None, stops_last=True)
        self._apply()
        if self.remotes:
            log.info("forwarding every received instance to %s", ", ".join(self.remotes))

    def reconfigure(self, ctx: NodeContext) -> None:
        """Apply a reloaded config (SIGHUP): jobs for new forwarding remotes, none for dropped ones.

        A worker whose remote changed (address, AE title) or stopped forwarding
        ends after the instance in flight; its job goes back to the queue and is
        claimed again with the new settings.  Outbox rows are durable, so nothing
        is lost.
        """
        before = self.remotes
        self.ctx = ctx
        self.remotes = {r.name: r for r in ctx.settings.remotes if r.forward}
        self._apply()
        with self._lock:
            workers = dict(self._workers)
        for name, worker in workers.items():
            if before.get(name) != self.remotes.get(name):
                worker.stop()
        if self.runner is not None:
            self.runner.wake()

    def _apply(self) -> None:
        outbox.install_hook(self.ctx.ingest, self.remotes, notify=self.wake)
        if self.runner is None:
            return
        for name in self.remotes:
            jobs.ensure(KIND, name)
        for job in jobs.of_kind(KIND, ACTIVE_STATES):
            if job.key not in self.remotes:
                jobs.cancel(job.id, f"remote {job.key!r} no longer has forward = true")

    def wake(self, remote: str) -> None:
        """Rows were queued for *remote*: wake its worker, here or (``elsewhere``) in another process."""
        if not self.wake_here(remote) and self.elsewhere is not None:
            self.elsewhere(remote)

    def wake_here(self, remote: str) -> bool:
        """Wake *remote*'s worker if it runs in this process; False if it does not."""
        with self._lock:
            worker = self._workers.get(remote)
        if worker is not None:
            worker.wake()
        return worker is not None

    def status(self, remote: str) -> WorkerStatus | None:
        """The state of *remote*'s worker: this process's, else what its holder published."""
        with self._lock:
            worker = self._workers.get(remote)
        return worker.status if worker is not None else published_status(remote)

    def run(self, job: Job, progress: Progress) -> None:
        """The forward kind's body: drain *job*'s remote until asked to stop."""
        remote = self.remotes.get(job.key or "")
        if remote is None:
            raise Failed("config", f"remote {job.key!r} does not have forward = true in this node's config")
        worker = ForwardWorker(self.ctx, remote, progress)
        worker.sent_before = job.done
        progress.on_cancel(worker.stop)
        with self._lock:
            self._workers[remote.name] = worker
        try:
            worker.run()
        finally:
            with self._lock:
                self._workers.pop(remote.name, None)
        # Never done while the remote forwards: back to the queue for the next holder.
        raise Interrupted


class ForwardJobs:
    """The ``forward`` job kind."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def run(self, job: Job, progress: Progress) -> None:
        self.forwarder.run(job, progress)


def published_status(remote: str) -> WorkerStatus | None:
    """What the worker holding *remote*'s forward job last wrote to its row; None if none holds it."""
    job = jobs.find(KIND, remote)
    if job is None or job.state != RUNNING or job.lease_until is None or job.lease_until < utcnow():
        return None
    return WorkerStatus.from_payload(job.data)
