"""The job table: one row per piece of long work, whatever its kind (architecture principle 5).

A row is the job: its kind ("export", "forward", "send", ...), the key two
requests share it by (unique per kind; NULL for jobs that are never
shared), its state and the kind's own phase, progress counts and bytes,
the reason it failed, its attempts and the time before which it is not
retried, the worker that holds it and until when (the lease), and a small
JSON payload of the kind's own fields.

Every statement the job mechanism runs is here, written with peewee so that
it runs on SQLite and PostgreSQL alike.  Claims are guarded updates
(``UPDATE ... WHERE id = ? AND <still claimable>``): on SQLite the write
transaction serialises them, on PostgreSQL a concurrent update of the same
row makes the second one re-check its WHERE against the committed row and
match nothing, so exactly one claimer gets each job either way.

States: ``queued`` (waiting for a worker, perhaps until ``not_before``),
``running`` (claimed; a running row whose lease has expired is claimable
again: its worker died), and the final ``done`` / ``failed`` /
``cancelled``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import peewee

from .db import write_transaction
from .models import BaseModel, utcnow

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
ACTIVE_STATES = (QUEUED, RUNNING)

# The export kind, keyed by the accession: the index itself drops these rows when a
# deletion makes their archive stale (node/index/deletion.py), and reports them in
# the export's own words (queued / retrieving / zipping / ready / failed).
EXPORT = "export"
EXPORT_RETRIEVING = "retrieving"  # phases of a running export
EXPORT_ZIPPING = "zipping"
EXPORT_READY = "ready"
EXPORT_STATES = (QUEUED, EXPORT_RETRIEVING, EXPORT_ZIPPING, EXPORT_READY, FAILED)


def export_state(state: str, phase: str) -> str:
    """The export's word for a job's state and phase."""
    if state == RUNNING:
        return phase or QUEUED
    if state == QUEUED:
        return QUEUED
    return EXPORT_READY if state == DONE else FAILED
FINAL_STATES = (DONE, FAILED, CANCELLED)

# Why a job failed (``failure``); kinds may add their own words.
NOT_FOUND = "not_found"  # what it is about exists nowhere
REMOTE = "remote"  # the remote could not be reached or refused
PARTIAL = "partial"  # fewer instances went through than there were
INTERNAL = "internal"  # anything else (disk full, a bug, ...)


class Job(BaseModel):
    kind = peewee.TextField()
    key = peewee.TextField(null=True)
    state = peewee.TextField(default=QUEUED)
    phase = peewee.TextField(default="")  # the kind's own step (export: retrieving, zipping)
    done = peewee.IntegerField(default=0)
    failed = peewee.IntegerField(default=0)
    total = peewee.IntegerField(null=True)
    bytes = peewee.BigIntegerField(default=0)
    message = peewee.TextField(default="")
    failure = peewee.TextField(default="")
    attempts = peewee.IntegerField(default=0)  # claims so far
    not_before = peewee.DateTimeField(null=True)  # a retry waits until then
    claimed_by = peewee.TextField(null=True)  # worker identity: host:pid:random
    lease_until = peewee.DateTimeField(null=True)
    payload = peewee.TextField(default="{}")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    started_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "job"
        indexes = ((("kind", "key"), True),)

    @property
    def data(self) -> dict[str, Any]:
        """The payload, decoded (a fresh dict: changing it changes nothing stored)."""
        return json.loads(self.payload or "{}")


def encode(payload: dict[str, Any]) -> str:
    """A payload as stored: compact JSON."""
    return json.dumps(payload, separators=(",", ":"), default=str)


# -- reading -------------------------------------------------------------------


def get(job_id: int) -> Job | None:
    """The job with this id, or None."""
    return Job.get_or_none(Job.id == job_id)


def find(kind: str, key: str) -> Job | None:
    """The job of *kind* shared under *key*, or None."""
    return Job.get_or_none((Job.kind == kind) & (Job.key == key))


def of_kind(kind: str, states: Iterable[str] = STATES) -> list[Job]:
    """Every job of *kind* in one of *states*, oldest first."""
    return list(Job.select().where((Job.kind == kind) & Job.state.in_(list(states))).order_by(Job.id))


def listing(
    kinds: Sequence[str] = (), states: Sequence[str] = (), limit: int = 100, offset: int = 0
) -> tuple[list[Job], int]:
    """Jobs newest first, filtered by kind and state, one page of them; and how many match."""
    where = Job.id.is_null(False)
    if kinds:
        where &= Job.kind.in_(list(kinds))
    if states:
        where &= Job.state.in_(list(states))
    total = Job.select().where(where).count()
    rows = list(Job.select().where(where).order_by(Job.id.desc()).limit(limit).offset(offset))
    return rows, total


def count_active(kind: str) -> int:
    """Jobs of *kind* queued or running."""
    return Job.select().where((Job.kind == kind) & Job.state.in_(ACTIVE_STATES)).count()


# -- queueing ------------------------------------------------------------------


def _fresh(
    payload: dict[str, Any], total: int | None, state: str, failure: str, message: str, now: dt.datetime
) -> dict:
    """Column values of a job (re)starting from nothing."""
    final = state in FINAL_STATES
    return {
        Job.state: state,
        Job.phase: "",
        Job.done: 0,
        Job.failed: 0,
        Job.total: total,
        Job.bytes: 0,
        Job.message: message,
        Job.failure: failure,
        Job.attempts: 0,
        Job.not_before: None,
        Job.claimed_by: None,
        Job.lease_until: None,
        Job.payload: encode(payload),
        Job.updated_at: now,
        Job.started_at: None,
        Job.finished_at: now if final else None,
    }


def submit(
    kind: str,
    key: str | None = None,
    payload: dict[str, Any] | None = None,
    *,
    total: int | None = None,
    state: str = QUEUED,
    failure: str = "",
    message: str = "",
) -> tuple[Job, bool]:
    """Queue a job; return it and whether this call created or re-armed it.

    With a *key*, a job of the same kind and key that is queued or running
    is returned as it is (two requests share one job); a finished one is
    re-armed in place (same id, fresh counts).  Without a key every call
    makes a new job.  *state* ``failed`` records a job that failed before
    it could start (e.g. its remote refused the first question).
    """
    payload = payload or {}
    now = utcnow()
    for _ in range(2):
        try:
            with write_transaction():
                if key is not None:
                    job = find(kind, key)
                    if job is not None:
                        if job.state in ACTIVE_STATES:
                            return job, False
                        Job.update(_fresh(payload, total, state, failure, message, now)).where(
                            Job.id == job.id
                        ).execute()
                        return get(job.id), True  # type: ignore[return-value]
                values = {f.name: v for f, v in _fresh(payload, total, state, failure, message, now).items()}
                job = Job.create(kind=kind, key=key, created_at=now, **values)
                return job, True
        except peewee.IntegrityError:
            # Another process inserted the same (kind, key) between our read and
            # write (PostgreSQL; SQLite's write lock already serialises): share its job.
            continue
    raise RuntimeError(f"could not queue {kind} job {key!r}")


def ensure(kind: str, key: str, payload: dict[str, Any] | None = None) -> Job:
    """The job of *kind* under *key*, queued if it is missing or finished (long-lived jobs)."""
    job = find(kind, key)
    if job is not None and job.state in ACTIVE_STATES:
        return job
    return submit(kind, key, payload)[0]


def remove(job_ids: Iterable[int]) -> int:
    """Delete finished jobs by id (running or queued ones stay); return how many went."""
    ids = list(job_ids)
    if not ids:
        return 0
    with write_transaction():
        return Job.delete().where(Job.id.in_(ids) & Job.state.in_(FINAL_STATES)).execute()


def cancel(job_id: int, message: str = "cancelled") -> bool:
    """Mark a queued or running job cancelled; its worker notices at its next lease renewal."""
    now = utcnow()
    with write_transaction():
        changed = (
            Job.update(
                {
                    Job.state: CANCELLED,
                    Job.message: message,
                    Job.claimed_by: None,
                    Job.lease_until: None,
                    Job.updated_at: now,
                    Job.finished_at: now,
                }
            )
            .where((Job.id == job_id) & Job.state.in_(ACTIVE_STATES))
            .execute()
        )
    return changed == 1


def requeue(job_id: int) -> bool:
    """Queue a failed or cancelled job again from where it stopped (fresh attempts)."""
    now = utcnow()
    with write_transaction():
        changed = (
            Job.update(
                {
                    Job.state: QUEUED,
                    Job.attempts: 0,
                    Job.not_before: None,
                    Job.failure: "",
                    Job.updated_at: now,
                    Job.finished_at: None,
                }
            )
            .where((Job.id == job_id) & Job.state.in_((FAILED, CANCELLED)))
            .execute()
        )
    return changed == 1


# -- claiming and holding --------------------------------------------------------


def _claimable(now: dt.datetime):
    """Queued and due, or running under a lease that has run out (its worker is gone)."""
    due = (Job.state == QUEUED) & (Job.not_before.is_null() | (Job.not_before <= now))
    orphaned = (Job.state == RUNNING) & (Job.lease_until.is_null() | (Job.lease_until < now))
    return due | orphaned


def claim(
    worker: str, kind: str, limit: int, lease_s: float, *, only: Iterable[int] | None = None
) -> list[Job]:
    """Claim up to *limit* due jobs of *kind* for *worker*, oldest first; return them as claimed.

    *only* restricts the claim to those job ids (a command line running its own job).
    """
    if limit <= 0:
        return []
    now = utcnow()
    where = (Job.kind == kind) & _claimable(now)
    if only is not None:
        where &= Job.id.in_(list(only))
    candidates = [row.id for row in Job.select(Job.id).where(where).order_by(Job.id).limit(limit)]
    claimed = []
    for job_id in candidates:
        with write_transaction():
            won = (
                Job.update(
                    {
                        Job.state: RUNNING,
                        Job.claimed_by: worker,
                        Job.lease_until: now + dt.timedelta(seconds=lease_s),
                        Job.attempts: Job.attempts + 1,
                        Job.not_before: None,
                        Job.started_at: peewee.fn.COALESCE(Job.started_at, now),
                        Job.updated_at: now,
                    }
                )
                .where((Job.id == job_id) & (Job.kind == kind) & _claimable(now))
                .execute()
            )
        if won == 1:
            claimed.append(get(job_id))
    return [j for j in claimed if j is not None]


def next_due(kinds: Sequence[str]) -> dt.datetime | None:
    """When the earliest queued job of *kinds* waiting for a retry becomes due."""
    if not kinds:
        return None
    return (
        Job.select(peewee.fn.MIN(Job.not_before))
        .where(Job.kind.in_(list(kinds)) & (Job.state == QUEUED) & Job.not_before.is_null(False))
        .scalar()
    )


def held_by_others(worker: str, kinds: Sequence[str]) -> list[tuple[int, str]]:
    """(id, claimed_by) of running jobs of *kinds* under a live lease of another worker."""
    if not kinds:
        return []
    now = utcnow()
    return list(
        Job.select(Job.id, Job.claimed_by)
        .where(
            Job.kind.in_(list(kinds))
            & (Job.state == RUNNING)
            & (Job.lease_until >= now)
            & (Job.claimed_by != worker)
        )
        .tuples()
    )


def expire(job_id: int, claimed_by: str) -> bool:
    """End the lease of a worker known to be dead, so that the job can be claimed at once."""
    with write_transaction():
        return (
            Job.update({Job.lease_until: None})
            .where((Job.id == job_id) & (Job.state == RUNNING) & (Job.claimed_by == claimed_by))
            .execute()
            == 1
        )


def _held(job_id: int, worker: str):
    return (Job.id == job_id) & (Job.state == RUNNING) & (Job.claimed_by == worker)


def renew(worker: str, job_ids: Iterable[int], lease_s: float) -> set[int]:
    """Extend *worker*'s lease on *job_ids*; return the ids it still holds (others were lost)."""
    ids = list(job_ids)
    if not ids:
        return set()
    until = utcnow() + dt.timedelta(seconds=lease_s)
    kept = set()
    with write_transaction():
        for job_id in ids:
            if Job.update({Job.lease_until: until}).where(_held(job_id, worker)).execute() == 1:
                kept.add(job_id)
    return kept


_PROGRESS_FIELDS = {
    "phase": Job.phase,
    "done": Job.done,
    "failed": Job.failed,
    "total": Job.total,
    "bytes": Job.bytes,
    "message": Job.message,
    "failure": Job.failure,
}


def _columns(fields: dict[str, Any], now: dt.datetime) -> dict:
    columns: dict = {Job.updated_at: now}
    for name, value in fields.items():
        if name == "payload":
            columns[Job.payload] = encode(value)
        else:
            columns[_PROGRESS_FIELDS[name]] = value
    return columns


def save(job_id: int, worker: str, fields: dict[str, Any]) -> bool:
    """Write progress of a job *worker* holds; False when it no longer holds it."""
    with write_transaction():
        return Job.update(_columns(fields, utcnow())).where(_held(job_id, worker)).execute() == 1


def finish(job_id: int, worker: str, state: str, fields: dict[str, Any]) -> bool:
    """Record the end of a held job (``done`` / ``failed``), releasing it; False if it was lost."""
    now = utcnow()
    columns = _columns(fields, now)
    columns.update({Job.state: state, Job.claimed_by: None, Job.lease_until: None, Job.finished_at: now})
    with write_transaction():
        return Job.update(columns).where(_held(job_id, worker)).execute() == 1


def release(job_id: int, worker: str, fields: dict[str, Any], not_before: dt.datetime | None = None) -> bool:
    """Give a held job back to the queue (stop, or a retry at *not_before*), keeping its progress."""
    columns = _columns(fields, utcnow())
    columns.update(
        {Job.state: QUEUED, Job.claimed_by: None, Job.lease_until: None, Job.not_before: not_before}
    )
    with write_transaction():
        return Job.update(columns).where(_held(job_id, worker)).execute() == 1
