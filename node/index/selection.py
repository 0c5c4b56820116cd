"""Which stored instances a request names by Study, Series and SOP Instance UIDs.

A :class:`Selection` is the union of whole studies, whole series and single
instances; the instances it holds are read in id order, a page at a time,
so that a job can go through a large study in bounded memory and resume
after the last id it settled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import peewee

from .models import Instance, Series, Study


@dataclass(frozen=True)
class Selection:
    studies: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.studies or self.series or self.instances)

    def as_payload(self) -> dict[str, list[str]]:
        return {"studies": list(self.studies), "series": list(self.series), "instances": list(self.instances)}

    @classmethod
    def from_payload(cls, data: dict) -> Selection:
        return cls(
            tuple(data.get("studies", ())), tuple(data.get("series", ())), tuple(data.get("instances", ()))
        )


@dataclass(frozen=True)
class Held:
    """One selected instance with what sending it needs."""

    id: int
    path: str  # store-relative
    sop_class_uid: str
    sop_uid: str
    transfer_syntax: str
    size: int
    study_uid: str


def _held(model, column, wanted: Sequence[str]) -> set[str]:
    if not wanted:
        return set()
    return {row[0] for row in model.select(column).where(column.in_(list(wanted))).tuples()}


def unknown(selection: Selection) -> list[str]:
    """The UIDs *selection* names that the index does not hold at that level."""
    missing = []
    for model, column, wanted in (
        (Study, Study.study_uid, selection.studies),
        (Series, Series.series_uid, selection.series),
        (Instance, Instance.sop_uid, selection.instances),
    ):
        found = _held(model, column, wanted)
        missing += [uid for uid in wanted if uid not in found]
    return missing


def classify(uids: Iterable[str]) -> tuple[Selection, list[str]]:
    """Sort UIDs of any level into a selection by what the index holds; return it and the unknown ones."""
    wanted = list(dict.fromkeys(uids))
    studies = _held(Study, Study.study_uid, wanted)
    series = _held(Series, Series.series_uid, wanted)
    instances = _held(Instance, Instance.sop_uid, wanted)
    selection = Selection(
        tuple(u for u in wanted if u in studies),
        tuple(u for u in wanted if u in series and u not in studies),
        tuple(u for u in wanted if u in instances and u not in studies and u not in series),
    )
    return selection, [u for u in wanted if u not in studies | series | instances]


_COLUMNS = (
    Instance.id,
    Instance.path,
    Instance.sop_class_uid,
    Instance.sop_uid,
    Instance.transfer_syntax,
    Instance.size,
    Study.study_uid,
)


def _where(selection: Selection):
    where = Instance.id.is_null()  # false: each part of the selection adds its rows
    if selection.studies:
        where |= Study.study_uid.in_(list(selection.studies))
    if selection.series:
        where |= Series.series_uid.in_(list(selection.series))
    if selection.instances:
        where |= Instance.sop_uid.in_(list(selection.instances))
    return where


def _joined(*columns):
    return Instance.select(*columns).join(Series).join(Study)


def count(selection: Selection) -> tuple[int, int]:
    """How many instances *selection* holds, and their bytes."""
    n, size = (
        _joined(peewee.fn.COUNT(Instance.id), peewee.fn.COALESCE(peewee.fn.SUM(Instance.size), 0))
        .where(_where(selection))
        .tuples()
        .first()
    )
    return int(n), int(size)


def page(selection: Selection, after_id: int, limit: int) -> list[Held]:
    """Up to *limit* instances of *selection* with ids above *after_id*, in id order."""
    rows = (
        _joined(*_COLUMNS)
        .where(_where(selection) & (Instance.id > after_id))
        .order_by(Instance.id)
        .limit(limit)
        .tuples()
    )
    return [Held(*row) for row in rows]


def by_ids(ids: Sequence[int]) -> list[Held]:
    """The instances with these ids that are still stored, in id order."""
    if not ids:
        return []
    rows = _joined(*_COLUMNS).where(Instance.id.in_(list(ids))).order_by(Instance.id).tuples()
    return [Held(*row) for row in rows]
