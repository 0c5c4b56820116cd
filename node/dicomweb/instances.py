"""Which stored instances a WADO-RS path names, looked up in the index."""

from __future__ import annotations

from dataclasses import dataclass

from ..index.models import Instance, Series, Study
from ..store import InstanceStore


class NotFound(LookupError):
    """The study, series or instance named by a request is not held here."""


@dataclass(frozen=True)
class StoredInstance:
    """One instance file as the index knows it."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str  # store-relative
    size: int
    number_of_frames: int | None
    rows: int | None = None  # None: no image (a report, a document...)


def _select():
    return (
        Instance.select(
            Instance.sop_uid,
            Instance.sop_class_uid,
            Instance.transfer_syntax,
            Instance.path,
            Instance.size,
            Instance.number_of_frames,
            Instance.rows,
            Series.series_uid,
            Study.study_uid,
        )
        .join(Series)
        .join(Study)
    )


def _rows(query) -> list[StoredInstance]:
    return [
        StoredInstance(
            study_uid=study,
            series_uid=series,
            sop_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax=syntax,
            path=path,
            size=size,
            number_of_frames=frames,
            rows=rows,
        )
        for sop, sop_class, syntax, path, size, frames, rows, series, study in query.tuples()
    ]


def _at_level(query, study_uid: str, series_uid: str | None, sop_uid: str | None):
    query = query.where(Study.study_uid == study_uid)
    if series_uid is not None:
        query = query.where(Series.series_uid == series_uid)
    if sop_uid is not None:
        query = query.where(Instance.sop_uid == sop_uid)
    return query


def find_instances(
    study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[StoredInstance]:
    """The instances of a study (or of one of its series, or one instance), in series/instance order.

    Raises NotFound naming the first UID that does not resolve (a series of
    another study counts as not found).
    """
    query = _at_level(_select(), study_uid, series_uid, sop_uid)
    query = query.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    found = _rows(query)
    if not found:
        raise NotFound(_missing(study_uid, series_uid, sop_uid))
    return found


def find_retrieved(
    store: InstanceStore, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[StoredInstance]:
    """:func:`find_instances` for a client retrieving them: noted as read (the bounded store's LRU order)."""
    found = find_instances(study_uid, series_uid, sop_uid)
    store.note_reads(i.path for i in found)
    return found


def instances_by_id(
    ids: list[int], study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[StoredInstance]:
    """The instances with these row ids that lie at the level named (arrival order is the caller's)."""
    if not ids:
        return []
    return _rows(_at_level(_select(), study_uid, series_uid, sop_uid).where(Instance.id.in_(ids)))


def representative(instances: list[StoredInstance]) -> StoredInstance | None:
    """The instance a thumbnail shows: the middle image of the first series holding images.

    *instances* are in find_instances' order (series number, then instance
    number), so "first" and "middle" are what a viewer's series list shows.
    """
    series: dict[str, list[StoredInstance]] = {}
    for inst in instances:
        if inst.rows:
            series.setdefault(inst.series_uid, []).append(inst)
    first = next(iter(series.values()), None)
    return first[len(first) // 2] if first else None


def _missing(study_uid: str, series_uid: str | None, sop_uid: str | None) -> str:
    """Name the first level of the path that is not in the index."""
    if not Study.select().where(Study.study_uid == study_uid).exists():
        return f"study {study_uid} not found"
    if series_uid is not None:
        in_study = (
            Series.select()
            .join(Study)
            .where((Series.series_uid == series_uid) & (Study.study_uid == study_uid))
        )
        if not in_study.exists():
            return f"series {series_uid} not found in study {study_uid}"
    if sop_uid is not None:
        where = f"series {series_uid}" if series_uid else f"study {study_uid}"
        return f"instance {sop_uid} not found in {where}"
    return f"no instances in study {study_uid}"
