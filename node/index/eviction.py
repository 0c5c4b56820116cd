"""The index's side of eviction: studies in least-recently-used order, which have a copy elsewhere.

An instance has a *known copy elsewhere* when

- it came from a remote that keeps what it holds (its ``source`` is
  ``dimse:<name>`` or ``retrieve:<name>`` of one of *holders*: the remotes
  the node retrieves from, or forwards to), or
- it was forwarded successfully (an outbox row ``done``, of the instance's
  current generation) to every ``forward = true`` remote, not counting the
  one it came from.

A study is evictable when every one of its instances has one.  What each
study was last used at is the later of ``accessed_at`` (its last read) and
``updated_at`` (its last change), so a study never read ages from its
arrival and one that keeps receiving instances is kept.

``evicted_study`` records each evicted study and the remotes that hold it
(:func:`holders_of`), for whoever fetches it again on its next access.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import peewee

from .models import BaseModel, Instance, Patient, Series, Study, utcnow
from .outbox import DONE, OutboxEntry

# Sources (node.ingest.Source.label) meaning "came from that remote".
SOURCE_DOORS = ("dimse", "retrieve")


class EvictedStudy(BaseModel):
    study_uid = peewee.TextField(unique=True)
    patient_id = peewee.TextField(default="")
    accession_number = peewee.TextField(default="")
    remotes = peewee.TextField(default="")  # space-separated remote names (config names)
    reason = peewee.TextField(default="")  # "size" or "age", of the last eviction
    instances = peewee.BigIntegerField(default=0)
    bytes = peewee.BigIntegerField(default=0)
    evictions = peewee.BigIntegerField(default=1)  # how many times the study was evicted
    evicted_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "evicted_study"


@dataclass(frozen=True)
class CopyRule:
    """Which remotes count as holding a copy (from the config)."""

    holders: tuple[str, ...] = ()  # remotes whose instances we received are kept there
    forward: tuple[str, ...] = ()  # the forward = true remotes

    def labels(self, name: str) -> list[str]:
        return [f"{door}:{name}" for door in SOURCE_DOORS]

    def holder_labels(self) -> dict[str, str]:
        """Source label -> remote name, for every holder."""
        return {label: name for name in self.holders for label in self.labels(name)}


@dataclass(frozen=True)
class Used:
    """A study in least-recently-used order."""

    id: int
    study_uid: str
    accession_number: str
    last_used: dt.datetime


@dataclass
class Judged:
    """An evictable study: what it holds, and where the copies are."""

    instances: int = 0
    bytes: int = 0
    forwarded: int = 0  # instances delivered to every forward remote
    sources: set[str] = field(default_factory=set)  # holder remotes its instances came from


def _last_used() -> peewee.Node:
    later = Study.accessed_at.is_null(False) & (Study.accessed_at > Study.updated_at)
    return peewee.Case(None, [(later, Study.accessed_at)], Study.updated_at)


def least_recent(limit: int, after: tuple[dt.datetime, int] | None = None) -> list[Used]:
    """Up to *limit* studies in least-recently-used order, after the (last_used, id) *after*."""
    last_used = _last_used()
    query = Study.select(Study.id, Study.study_uid, Study.accession_number, last_used.alias("last_used"))
    if after is not None:
        at, study_id = after
        query = query.where((last_used > at) | ((last_used == at) & (Study.id > study_id)))
    rows = query.order_by(last_used, Study.id).limit(limit).tuples()
    return [Used(i, uid, acc or "", _datetime(at)) for i, uid, acc, at in rows]


def _datetime(value) -> dt.datetime:
    # A CASE loses the column's type: SQLite hands back the stored text.
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def _forwarded(rule: CopyRule) -> peewee.Node | None:
    """Delivered to every forward remote (or came from it); None without forward remotes."""
    condition = None
    for name in rule.forward:
        done = OutboxEntry.select(OutboxEntry.id).where(
            (OutboxEntry.instance == Instance.id) & (OutboxEntry.remote == name) & (OutboxEntry.state == DONE)
        )
        part = peewee.fn.EXISTS(done) | Instance.source.in_(rule.labels(name))
        condition = part if condition is None else condition & part
    return condition


def _count(condition: peewee.Node | None) -> peewee.Node:
    if condition is None:
        return peewee.Value(0)
    return peewee.fn.SUM(peewee.Case(None, [(condition, 1)], 0))


def _copied(rule: CopyRule) -> tuple[peewee.Node | None, peewee.Node | None]:
    """(has a known copy elsewhere, was delivered to every forward remote) as conditions on an instance."""
    labels = rule.holder_labels()
    from_holder = Instance.source.in_(list(labels)) if labels else None
    forwarded = _forwarded(rule)
    if from_holder is None or forwarded is None:
        return (from_holder if forwarded is None else forwarded), forwarded
    return from_holder | forwarded, forwarded


def judge(study_ids: Sequence[int], rule: CopyRule) -> dict[int, Judged]:
    """Those of *study_ids* whose every instance has a known copy elsewhere, with their figures.

    A study that may not go is ruled out by its first instance without a
    copy (NOT EXISTS stops there): a pass over an archive whose forward
    remote has been down costs about one probe per study, not one per
    instance (bench/eviction.py).
    """
    copied, forwarded = _copied(rule)
    if not study_ids or copied is None:
        return {}
    without_copy = Instance.select(Instance.id).join(Series).where((Series.study == Study.id) & ~copied)
    evictable = [
        study_id
        for (study_id,) in Study.select(Study.id)
        .where(Study.id.in_(list(study_ids)) & ~peewee.fn.EXISTS(without_copy))
        .tuples()
    ]
    if not evictable:
        return {}
    rows = (
        Instance.select(
            Series.study,
            peewee.fn.COUNT(Instance.id),
            peewee.fn.COALESCE(peewee.fn.SUM(Instance.size), 0),
            _count(forwarded),
        )
        .join(Series)
        .where(Series.study.in_(evictable))
        .group_by(Series.study)
        .tuples()
    )
    judged = {
        study_id: Judged(int(n), int(size), int(delivered or 0)) for study_id, n, size, delivered in rows
    }
    labels = rule.holder_labels()
    if labels:
        sources = (
            Instance.select(Series.study, Instance.source)
            .join(Series)
            .where(Series.study.in_(list(judged)) & Instance.source.in_(list(labels)))
            .distinct()
            .tuples()
        )
        for study_id, source in sources:
            judged[study_id].sources.add(labels[source])
    return judged


def exists(study_id: int) -> bool:
    """True while the study row *study_id* is in the index."""
    return Study.select(Study.id).where(Study.id == study_id).exists()


def remotes_holding(judged: Judged, rule: CopyRule) -> list[str]:
    """The remotes that hold (some of) a judged study: where it came from, where it was forwarded."""
    names = sorted(judged.sources)
    if judged.forwarded:
        names += [n for n in rule.forward if n not in names]
    return names


def record_evicted(study_id: int, judged: Judged, rule: CopyRule, reason: str) -> None:
    """Remember that the study *study_id* is evicted and who holds it (inside the deletion's transaction)."""
    study = (
        Study.select(Study.study_uid, Study.accession_number, Patient.patient_id)
        .join(Patient)
        .where(Study.id == study_id)
        .tuples()
        .first()
    )
    if study is None:
        return
    uid, accession, patient_id = study
    values = {
        EvictedStudy.patient_id: patient_id or "",
        EvictedStudy.accession_number: accession or "",
        EvictedStudy.remotes: " ".join(remotes_holding(judged, rule)),
        EvictedStudy.reason: reason,
        EvictedStudy.instances: judged.instances,
        EvictedStudy.bytes: judged.bytes,
        EvictedStudy.evicted_at: utcnow(),
    }
    (
        EvictedStudy.insert({EvictedStudy.study_uid: uid, EvictedStudy.evictions: 1, **values})
        .on_conflict(
            conflict_target=[EvictedStudy.study_uid],
            update={**values, EvictedStudy.evictions: EvictedStudy.evictions + 1},
        )
        .execute()
    )


def holders_of(study_uid: str) -> list[str]:
    """The remotes (config names) that held the study *study_uid* when it was evicted; [] if never evicted."""
    row = EvictedStudy.select(EvictedStudy.remotes).where(EvictedStudy.study_uid == study_uid).first()
    return row.remotes.split() if row else []


def evicted_count() -> int:
    """How many evictions of studies the index has recorded (all time)."""
    total = EvictedStudy.select(peewee.fn.COALESCE(peewee.fn.SUM(EvictedStudy.evictions), 0)).scalar()
    return int(total or 0)
