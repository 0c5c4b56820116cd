"""The store-and-forward outbox: a durable row per (instance, forwarding remote).

Rows are written by an ingest hook inside the transaction that indexes the
instance, so an acknowledged instance always has its outbox rows.  A row is
``pending`` until the remote answers with success or a warning (``done``)
or refuses it for good (``failed``).  There is no "in flight" state: the
forwarder reads pending rows, sends them and settles them afterwards, so
rows being sent when the process dies are simply sent again.

``generation`` is bumped whenever the instance is stored again; a row is
settled only if its generation is the one that was sent, so a replacement
that arrives while the old copy is on the wire is sent too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import peewee

from ..ingest import Ingest, Source
from .db import execute, write_transaction
from .models import BaseModel, Instance, utcnow

PENDING = "pending"
DONE = "done"
FAILED = "failed"
STATES = (PENDING, DONE, FAILED)


class OutboxEntry(BaseModel):
    instance = peewee.ForeignKeyField(Instance, on_delete="CASCADE")
    remote = peewee.TextField()  # the remote's name in the config
    state = peewee.TextField(default=PENDING)
    generation = peewee.IntegerField(default=1)
    attempts = peewee.IntegerField(default=0)  # failure answers so far (not outages)
    not_before = peewee.DateTimeField(null=True)  # retry time after a transient refusal
    status = peewee.IntegerField(null=True)  # the remote's last DIMSE status
    error = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    done_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "outbox"


# -- enqueueing (inside the ingest transaction) ------------------------------


# One statement per (instance, remote): it runs inside every indexing
# transaction, where building the peewee query would cost more than the SQL.
# ON CONFLICT .. DO UPDATE is understood by SQLite (>= 3.24) and PostgreSQL.
_SQL_ENQUEUE = (
    'INSERT INTO "outbox" ("instance_id", "remote", "state", "generation", "attempts", "error",'
    ' "created_at", "updated_at") VALUES (?, ?, ?, 1, 0, \'\', ?, ?)'
    ' ON CONFLICT ("instance_id", "remote") DO UPDATE SET "state" = excluded."state",'
    ' "generation" = "outbox"."generation" + 1, "attempts" = 0, "not_before" = NULL,'
    ' "status" = NULL, "error" = \'\', "updated_at" = excluded."updated_at"'
)


class OutboxHook:
    """Ingest hook: queue each stored instance for every forwarding remote but its source.

    A row already there for (instance, remote) is re-armed rather than
    doubled: pending again, with a new generation so that a copy being
    sent right now does not settle it.
    """

    def __init__(self, remotes: Iterable[str], notify: Callable[[str], None] | None = None) -> None:
        self.remotes = tuple(remotes)
        self.notify = notify

    def __call__(self, instance: Instance, source: Source) -> None:
        now = utcnow()
        for name in self.remotes:
            if name == source.remote:
                continue  # never send an instance back where it came from
            execute(_SQL_ENQUEUE, [instance.id, name, PENDING, now, now])
            if self.notify:
                # Still inside the transaction: the worker's next read takes
                # the write lock first, so it waits for this commit.
                self.notify(name)


def install_hook(
    ingest: Ingest, remote_names: Iterable[str], notify: Callable[[str], None] | None = None
) -> OutboxHook:
    """Register on *ingest* (replacing any earlier one) the hook that fills the outbox for *remote_names*."""
    ingest.index_hooks[:] = [h for h in ingest.index_hooks if not isinstance(h, OutboxHook)]
    hook = OutboxHook(remote_names, notify)
    ingest.add_index_hook(hook)
    return hook


# -- the forwarder's side ----------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """One pending row with what is needed to send its instance."""

    id: int
    generation: int
    attempts: int
    path: str  # store-relative
    sop_class_uid: str
    sop_uid: str
    transfer_syntax: str


@dataclass(frozen=True)
class Settlement:
    """What became of a sent row: ``done``, ``failed`` or ``pending`` again (retry later)."""

    row: Queued
    state: str
    status: int | None = None
    error: str = ""
    not_before: dt.datetime | None = None


def _settle(settlements: Sequence[Settlement], now: dt.datetime) -> None:
    for s in settlements:
        fields: dict = {
            OutboxEntry.state: s.state,
            OutboxEntry.status: s.status,
            OutboxEntry.error: s.error,
            OutboxEntry.updated_at: now,
        }
        if s.state == DONE:
            fields[OutboxEntry.done_at] = now
            fields[OutboxEntry.not_before] = None
        else:
            fields[OutboxEntry.attempts] = s.row.attempts + 1
            fields[OutboxEntry.not_before] = s.not_before
        # Only the generation that was sent: a newer copy stays pending.
        OutboxEntry.update(fields).where(
            (OutboxEntry.id == s.row.id)
            & (OutboxEntry.generation == s.row.generation)
            & (OutboxEntry.state == PENDING)
        ).execute()


# Run before every batch: plain SQL, as the ingest path does for its hot statements.
_SQL_DUE = (
    'SELECT o."id", o."generation", o."attempts", i."path", i."sop_class_uid", i."sop_uid",'
    ' i."transfer_syntax" FROM "outbox" AS o JOIN "instance" AS i ON i."id" = o."instance_id"'
    ' WHERE o."remote" = ? AND o."state" = ? AND o."id" > ?'
    ' AND (o."not_before" IS NULL OR o."not_before" <= ?) ORDER BY o."id" LIMIT ?'
)


def settle_and_fetch(
    remote: str, settlements: Sequence[Settlement], limit: int, after_id: int = 0
) -> list[Queued]:
    """Record *settlements*, then return up to *limit* rows due for *remote*, oldest first.

    *after_id* skips rows up to that id (those already sent, answer not yet saved).

    One write transaction does both: it also makes the read wait for any
    ingest transaction that has just queued a row and woken the worker.
    """
    now = utcnow()
    with write_transaction():
        _settle(settlements, now)
        if limit <= 0:
            return []
        rows = execute(_SQL_DUE, [remote, PENDING, after_id, now, limit])
        return [Queued(*row) for row in rows]


def next_due(remote: str) -> dt.datetime | None:
    """When the earliest pending row of *remote* that is waiting for a retry becomes due."""
    return (
        OutboxEntry.select(peewee.fn.MIN(OutboxEntry.not_before))
        .where((OutboxEntry.remote == remote) & (OutboxEntry.state == PENDING))
        .scalar()
    )


# -- visibility and operator actions -----------------------------------------


@dataclass(frozen=True)
class QueueFigures:
    """What the outbox holds for one remote."""

    pending: int = 0
    failed: int = 0
    done: int = 0
    last_success: dt.datetime | None = None
    last_error: str = ""
    last_error_at: dt.datetime | None = None


def figures(remote: str) -> QueueFigures:
    """Queue depth, failures and the last success / error recorded for *remote*."""
    counts = dict(
        OutboxEntry.select(OutboxEntry.state, peewee.fn.COUNT(OutboxEntry.id))
        .where(OutboxEntry.remote == remote)
        .group_by(OutboxEntry.state)
        .tuples()
    )
    last_success = (
        OutboxEntry.select(peewee.fn.MAX(OutboxEntry.done_at))
        .where((OutboxEntry.remote == remote) & (OutboxEntry.state == DONE))
        .scalar()
    )
    last_error = (
        OutboxEntry.select(OutboxEntry.error, OutboxEntry.updated_at)
        .where(
            (OutboxEntry.remote == remote)
            & OutboxEntry.state.in_([PENDING, FAILED])
            & (OutboxEntry.error != "")
        )
        .order_by(OutboxEntry.updated_at.desc())
        .limit(1)
        .tuples()
        .first()
    )
    return QueueFigures(
        pending=counts.get(PENDING, 0),
        failed=counts.get(FAILED, 0),
        done=counts.get(DONE, 0),
        last_success=last_success,
        last_error=last_error[0] if last_error else "",
        last_error_at=last_error[1] if last_error else None,
    )


def totals() -> dict[str, int]:
    """Rows per state over every remote (for ``/health``)."""
    counts = dict(
        OutboxEntry.select(OutboxEntry.state, peewee.fn.COUNT(OutboxEntry.id))
        .group_by(OutboxEntry.state)
        .tuples()
    )
    return {state: counts.get(state, 0) for state in STATES}


def requeue_failed(remote: str) -> int:
    """Make every failed row of *remote* pending again (fresh attempts); return how many."""
    now = utcnow()
    with write_transaction():
        return (
            OutboxEntry.update(
                {
                    OutboxEntry.state: PENDING,
                    OutboxEntry.attempts: 0,
                    OutboxEntry.not_before: None,
                    OutboxEntry.updated_at: now,
                }
            )
            .where((OutboxEntry.remote == remote) & (OutboxEntry.state == FAILED))
            .execute()
        )
