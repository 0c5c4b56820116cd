"""Read-only figures over the index: what /metrics, the console and /health show.

Everything here is computed when it is asked for (a scrape, a page view),
never on the ingest path.  Plain peewee queries, portable to PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import peewee

from .db import database
from .jobs import DONE, EXPORT, EXPORT_STATES, Job, export_state, find
from .models import Instance, Patient, Series, Study
from .outbox import STATES as OUTBOX_STATES
from .outbox import OutboxEntry


@dataclass(frozen=True)
class StoreTotals:
    instances: int
    bytes: int


def store_totals() -> StoreTotals:
    """How many instances the index holds and their bytes (one aggregate query)."""
    count, size = Instance.select(
        peewee.fn.COUNT(Instance.id), peewee.fn.COALESCE(peewee.fn.SUM(Instance.size), 0)
    ).scalar(as_tuple=True)
    return StoreTotals(int(count or 0), int(size or 0))


# The last store_totals(): (database, computed at, seconds it took, value).
_totals_lock = threading.Lock()
_totals: tuple[object, float, float, StoreTotals] | None = None


def recent_store_totals(share: float = 0.05) -> StoreTotals:
    """store_totals(), reused while it is younger than its own cost divided by *share*.

    The aggregate reads every instance row: about 1 s at a million
    instances (measured under shared load), a few ms on a small archive.
    Reusing each result for 20 times what it cost keeps scrapes and status
    pages to about 5% of one core at any size; a small archive's figures
    stay exact (a 2 ms query is reused for 40 ms), a large one's lag by
    seconds, which a capacity gauge can afford.
    """
    global _totals
    now = time.monotonic()
    db = database.obj
    with _totals_lock:
        if _totals is not None:
            owner, at, cost, value = _totals
            if owner is db and now - at < cost / share:
                return value
    value = store_totals()
    with _totals_lock:
        _totals = (db, now, time.monotonic() - now, value)
    return value


def counts() -> dict[str, int]:
    """Rows per level: patients, studies, series, instances."""
    return {
        "patients": Patient.select().count(),
        "studies": Study.select().count(),
        "series": Series.select().count(),
        "instances": Instance.select().count(),
    }


def outbox_by_remote() -> dict[str, dict[str, int]]:
    """Outbox rows per remote and state: ``{"pacs": {"pending": 3, "failed": 1, "done": 90}}``."""
    out: dict[str, dict[str, int]] = {}
    rows = (
        OutboxEntry.select(OutboxEntry.remote, OutboxEntry.state, peewee.fn.COUNT(OutboxEntry.id))
        .group_by(OutboxEntry.remote, OutboxEntry.state)
        .tuples()
    )
    for remote, state, count in rows:
        out.setdefault(remote, dict.fromkeys(OUTBOX_STATES, 0))[state] = count
    return out


def export_jobs_by_state() -> dict[str, int]:
    """Export jobs per state, every state present (0 when none)."""
    counts: dict[str, int] = {}
    rows = (
        Job.select(Job.state, Job.phase, peewee.fn.COUNT(Job.id))
        .where(Job.kind == EXPORT)
        .group_by(Job.state, Job.phase)
        .tuples()
    )
    for state, phase, count in rows:
        word = export_state(state, phase)
        counts[word] = counts.get(word, 0) + count
    states = (*EXPORT_STATES, *sorted(set(counts) - set(EXPORT_STATES)))
    return {state: counts.get(state, 0) for state in states}


def export_job(accession: str) -> Job | None:
    """The export job of a (validated) accession number, if one was ever asked for."""
    return find(EXPORT, accession)


def archive_bytes() -> int:
    """Bytes of the ready archives (the export cache)."""
    total = Job.select(peewee.fn.COALESCE(peewee.fn.SUM(Job.bytes), 0)).where(
        (Job.kind == EXPORT) & (Job.state == DONE)
    )
    return int(total.scalar() or 0)


def recent_export_jobs(limit: int = 50) -> list[Job]:
    """The export jobs touched last, newest first."""
    query = Job.select().where(Job.kind == EXPORT).order_by(Job.updated_at.desc(), Job.id.desc())
    return list(query.limit(limit))


def modalities() -> list[str]:
    """Distinct modalities of the stored series (for a search form's choices)."""
    query = (
        Series.select(Series.modality)
        .where(Series.modality != "")
        .distinct()
        .order_by(Series.modality)
        .tuples()
    )
    return [m for (m,) in query]


@dataclass
class SeriesFigures:
    series_uid: str
    instances: int = 0
    bytes: int = 0
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)  # UID -> instances


def study_figures(study_uid: str) -> dict[str, SeriesFigures] | None:
    """Per series of a study: instances, bytes and transfer syntaxes; None for an unknown study."""
    study = Study.get_or_none(Study.study_uid == study_uid)
    if study is None:
        return None
    rows = (
        Instance.select(
            Series.series_uid,
            Instance.transfer_syntax,
            peewee.fn.COUNT(Instance.id),
            peewee.fn.COALESCE(peewee.fn.SUM(Instance.size), 0),
        )
        .join(Series)
        .where(Series.study == study.id)
        .group_by(Series.series_uid, Instance.transfer_syntax)
        .tuples()
    )
    out: dict[str, SeriesFigures] = {}
    for series_uid, syntax, count, size in rows:
        figures = out.setdefault(series_uid, SeriesFigures(series_uid))
        figures.instances += count
        figures.bytes += int(size)
        figures.transfer_syntaxes[syntax] = figures.transfer_syntaxes.get(syntax, 0) + count
    return out


def stored_syntaxes() -> dict[str, frozenset[str]]:
    """The transfer syntaxes the index holds instances in, by SOP class (one scan of the instances)."""
    by_class: dict[str, set[str]] = {}
    query = Instance.select(Instance.sop_class_uid, Instance.transfer_syntax).distinct().tuples()
    for sop_class, syntax in query:
        by_class.setdefault(sop_class, set()).add(syntax)
    return {sop_class: frozenset(syntaxes) for sop_class, syntaxes in by_class.items()}
