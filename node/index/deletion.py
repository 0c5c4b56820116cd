"""Deleting studies, series and instances from the index, with a journal of the files left to remove.

Rows and files cannot go in one atomic step, so the order is chosen for
what a crash leaves behind:

1. One transaction deletes the index rows (instances, then the series,
   studies and patients left empty), the outbox rows of those instances
   and the export jobs of the affected accession numbers, and writes a
   ``pending_deletion`` row for every file and archive to remove.
2. Afterwards the files are removed and their journal rows settled
   (node/deletion.py), in small transactions.

A crash after (1) leaves journal rows naming files no row points to; the
next start and ``dicom-node check`` finish them, so ``check`` never sees the
debris.  The other order (files first) would leave rows whose file is gone:
instances that C-FIND announces and C-MOVE cannot send.

Each file's *fingerprint* (inode, size, mtime) is recorded when its row is
deleted: the file is removed only if it is still that file and no row
points to its path again, so an instance stored again right after the
deletion (same UIDs, same path) is not taken with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import peewee

from .db import write_transaction
from .jobs import EXPORT as EXPORT_KIND
from .jobs import Job
from .models import BaseModel, Instance, Patient, Series, Study, utcnow
from .outbox import OutboxEntry

FILE = "file"  # target: the store-relative path of an instance file
ARCHIVE = "archive"  # target: an accession number whose ZIP archive goes

LEVELS = ("study", "series", "instance")
_CHUNK = 500  # ids per IN (...) list: well below every database's parameter limit


class PendingDeletion(BaseModel):
    kind = peewee.TextField()
    target = peewee.TextField()
    # What the file was when its row was deleted ("" when it was already missing).
    fingerprint = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "pending_deletion"


@dataclass(frozen=True)
class Target:
    """Something to delete: a study, a series or an instance, by UID."""

    level: str  # one of LEVELS
    uid: str

    def __str__(self) -> str:
        return f"{self.level} {self.uid}"


@dataclass
class Deleted:
    """What one deletion removed from the index."""

    targets: list[Target] = field(default_factory=list)
    instances: int = 0
    bytes: int = 0
    series: int = 0  # series rows removed (left without instances)
    studies: int = 0
    patients: int = 0
    outbox: int = 0  # forwarding rows dropped
    accessions: list[str] = field(default_factory=list)  # of the affected studies
    archives: list[str] = field(default_factory=list)  # accessions whose export job was dropped
    journal: int = 0  # files and archives still to remove


@dataclass(frozen=True)
class Pending:
    """A journal row: a file or an archive to remove."""

    id: int
    kind: str
    target: str
    fingerprint: str
    created_at: dt.datetime


# -- finding what to delete ----------------------------------------------------


def classify(uid: str) -> Target | None:
    """The level *uid* is held at (study, then series, then instance), or None."""
    for level, model, column in _LOOKUP:
        if model.select(model.id).where(column == uid).exists():
            return Target(level, uid)
    return None


def locate(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> Target | None:
    """The target a DICOMweb path names, checked along its hierarchy; None if it is not held."""
    query = Study.select(Study.id).where(Study.study_uid == study_uid)
    if series_uid is not None:
        query = query.join(Series).where(Series.series_uid == series_uid)
    if sop_uid is not None:
        query = query.join(Instance).where(Instance.sop_uid == sop_uid)
    if not query.exists():
        return None
    if sop_uid is not None:
        return Target("instance", sop_uid)
    if series_uid is not None:
        return Target("series", series_uid)
    return Target("study", study_uid)


_LOOKUP = (
    ("study", Study, Study.study_uid),
    ("series", Series, Series.series_uid),
    ("instance", Instance, Instance.sop_uid),
)


def _instances(target: Target) -> peewee.ModelSelect:
    """The instance rows under *target*, with what the deletion needs of their parents."""
    columns = (Instance.id, Instance.path, Instance.size, Series.id, Study.id, Study.patient)
    query = Instance.select(*columns, Study.accession_number).join(Series).join(Study)
    return query.where(_UID_COLUMNS[target.level]() == target.uid)


_UID_COLUMNS = {
    "study": lambda: Study.study_uid,
    "series": lambda: Series.series_uid,
    "instance": lambda: Instance.sop_uid,
}


# -- step 1: the rows, and the journal -------------------------------------------


def delete_rows(
    targets: Sequence[Target],
    fingerprint: Callable[[str], str],
    *,
    within: Callable[[], bool] | None = None,
) -> Deleted:
    """Delete *targets* from the index in one transaction, journaling their files.

    *fingerprint* maps a store-relative path to what the file is now (see
    the module docstring); it is called inside the transaction, so no
    instance can be indexed at that path between the reading and the delete.
    *within*, when given, runs first in that transaction: False leaves
    everything as it was (nothing deleted), and what it writes commits with
    the deletion (the eviction checks there that the study may still go).
    """
    deleted = Deleted(targets=list(targets))
    now = utcnow()
    with write_transaction():
        if within is not None and not within():
            return deleted
        rows: dict[int, tuple] = {}
        for target in targets:
            for row in _instances(target).tuples():
                rows[row[0]] = row
        if not rows:
            return deleted
        ids = list(rows)
        series_ids = {r[3] for r in rows.values()}
        study_ids = {r[4] for r in rows.values()}
        patient_ids = {r[5] for r in rows.values()}
        accessions = sorted({r[6] for r in rows.values() if r[6]})
        journal = [
            {"kind": FILE, "target": r[1], "fingerprint": fingerprint(r[1]), "created_at": now}
            for r in rows.values()
        ]
        journal += [{"kind": ARCHIVE, "target": a, "fingerprint": "", "created_at": now} for a in accessions]
        for chunk in _chunks(journal):
            PendingDeletion.insert_many(chunk).execute()
        for chunk in _chunks(ids):
            # Explicit rather than left to ON DELETE CASCADE, which SQLite applies
            # only with its foreign_keys pragma on.
            deleted.outbox += OutboxEntry.delete().where(OutboxEntry.instance.in_(chunk)).execute()
            Instance.delete().where(Instance.id.in_(chunk)).execute()
        deleted.series = _prune(Series, series_ids, Instance.series)
        deleted.studies = _prune(Study, study_ids, Series.study)
        deleted.patients = _prune(Patient, patient_ids, Study.patient)
        # A study that keeps some instances has changed: caches built from it are stale.
        Study.update(updated_at=now).where(Study.id.in_(list(study_ids))).execute()
        deleted.archives = _drop_export_jobs(accessions)
        deleted.instances = len(rows)
        deleted.bytes = sum(r[2] or 0 for r in rows.values())
        deleted.accessions = accessions
        deleted.journal = len(journal)
    return deleted


def _prune(model: type[BaseModel], ids: set[int], child_link: peewee.ForeignKeyField) -> int:
    """Delete the rows *ids* of *model* that no longer have a child row; return how many."""
    if not ids:
        return 0
    wanted = list(ids)
    still_used = child_link.model.select(child_link).where(child_link.in_(wanted))
    return model.delete().where(model.id.in_(wanted) & model.id.not_in(still_used)).execute()


def _drop_export_jobs(accessions: list[str]) -> list[str]:
    """Forget the export jobs of *accessions* (their archives hold deleted instances); return whose.

    Whatever state a job is in: a running one finds its row gone, and a
    later request builds the archive again from what is left.
    """
    found = sorted(prepared_again(accessions))
    if found:
        Job.delete().where((Job.kind == EXPORT_KIND) & Job.key.in_(found)).execute()
    return found


def _chunks(items: list) -> Iterable[list]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# -- step 2: what is left to remove ------------------------------------------------


def pending(limit: int, after_id: int = 0) -> list[Pending]:
    """Up to *limit* journal rows after *after_id*, oldest first."""
    query = (
        PendingDeletion.select()
        .where(PendingDeletion.id > after_id)
        .order_by(PendingDeletion.id)
        .limit(limit)
    )
    return [Pending(r.id, r.kind, r.target, r.fingerprint, r.created_at) for r in query]


def pending_count() -> int:
    """How many files and archives are still to remove."""
    return PendingDeletion.select().count()


def indexed_paths(paths: Sequence[str]) -> set[str]:
    """Those of *paths* an instance row points to (stored again since its deletion)."""
    found: set[str] = set()
    for chunk in _chunks(list(paths)):
        found.update(p for (p,) in Instance.select(Instance.path).where(Instance.path.in_(chunk)).tuples())
    return found


def prepared_again(accessions: Sequence[str]) -> set[str]:
    """Those of *accessions* that have an export job again (its archive is a new one)."""
    if not accessions:
        return set()
    query = Job.select(Job.key).where((Job.kind == EXPORT_KIND) & Job.key.in_(list(accessions)))
    return {a for (a,) in query.tuples()}


def settle(ids: Sequence[int]) -> None:
    """Drop journal rows whose file or archive is gone."""
    for chunk in _chunks(list(ids)):
        PendingDeletion.delete().where(PendingDeletion.id.in_(chunk)).execute()
