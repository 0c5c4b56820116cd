"""The ingest path's statements: one instance filed in the index, in one transaction.

:func:`file_instance` upserts the patient, study and series rows, inserts or
updates the instance row and runs the caller's in-transaction hook (the
forwarding outbox), all in one write transaction.  Before writing it looks
where the index already holds the instance, its series and its study
(:func:`lookup`): an instance filed under another series or study, a series
under another study, a study under another patient is a :class:`Conflict`.
With ``replace`` the new data set wins: the instance (or series, or study) is
moved, the study it left is marked changed (``updated_at``: what cached
archives compare against) and levels left empty are deleted.

Hand-written SQL: this runs once per received instance, and building the
equivalent peewee queries cost several times the SQL itself.  Statements are
spelled with ``?`` and run through :func:`node.index.db.execute` (which gives
them the database's own placeholder); ``INSERT ... ON CONFLICT ... RETURNING``
is understood by SQLite >= 3.35 and PostgreSQL.  The columns come from the
catalogue (:mod:`node.index.catalog`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from . import catalog
from .db import execute, write_transaction
from .models import Instance

# Columns of each level's row the ingest writes (the unique key excluded).
PATIENT_COLUMNS = tuple(c.name for c in catalog.columns("PATIENT") if not c.attribute.unique) + ("charset",)
STUDY_COLUMNS = tuple(c.name for c in catalog.columns("STUDY") if not c.attribute.unique) + ("charset",)
SERIES_COLUMNS = tuple(c.name for c in catalog.columns("SERIES") if not c.attribute.unique)
INSTANCE_COLUMNS = tuple(c.name for c in catalog.columns("IMAGE") if not c.attribute.unique) + (
    "charset",
    "path",
    "size",
    "received_at",
    "calling_aet",
    "source",
)
_INTEGER = {c.name for level in catalog.LEVELS for c in catalog.columns(level) if c.integer}


@dataclass(frozen=True)
class Entry:
    """What one instance brings to the index: its UIDs and the columns of each level."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    patient: dict[str, object]  # PATIENT_COLUMNS
    study: dict[str, object]  # STUDY_COLUMNS
    series: dict[str, object]  # SERIES_COLUMNS
    # INSTANCE_COLUMNS but the file's (path, size, received_at, calling_aet, source)
    instance: dict[str, object]


@dataclass(frozen=True)
class Held:
    """Where the index holds an instance, a series or a study: row ids and UIDs above it."""

    instance_id: int | None
    path: str | None
    series_id: int | None
    series_uid: str | None
    study_id: int
    study_uid: str
    patient_row: int
    patient_id: str


@dataclass(frozen=True)
class Prior:
    """What the index holds already under the UIDs of an entry (None: not held)."""

    instance: Held | None = None
    series: Held | None = None
    study: Held | None = None


class Conflict(Exception):
    """The entry's instance, series or study is filed elsewhere in the index.

    *reason* says where it is held and what the new data set names;
    *comment* is a short form for a DIMSE ErrorComment (64 characters);
    *kind* is "instance", "series" or "study".
    """

    def __init__(self, kind: str, reason: str, comment: str, held: Held) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.comment = comment
        self.held = held


@dataclass(frozen=True)
class Filed:
    """The outcome of :func:`file_instance`."""

    instance: Instance
    old_path: str | None  # the file the instance row pointed at before (when looked up)
    replaced: bool | None  # the instance was held already (None: not looked up; its file tells)
    moved_from: Held | None  # where it (or its series or study) was moved away from


# -- reading what is there -------------------------------------------------------

_HELD = 'st."id", st."study_uid", p."id", p."patient_id"'
_TO_PATIENT = ' JOIN "patient" p ON p."id" = st."patient_id"'
_TO_STUDY = ' JOIN "study" st ON st."id" = se."study_id"' + _TO_PATIENT
_SQL_LOOKUP = (
    f'SELECT 1, i."id", i."path", se."id", se."series_uid", {_HELD} FROM "instance" i'
    f' JOIN "series" se ON se."id" = i."series_id"{_TO_STUDY} WHERE i."sop_uid" = ?'
    f' UNION ALL SELECT 2, NULL, NULL, se."id", se."series_uid", {_HELD} FROM "series" se{_TO_STUDY}'
    ' WHERE se."series_uid" = ?'
    f' UNION ALL SELECT 3, NULL, NULL, NULL, NULL, {_HELD} FROM "study" st{_TO_PATIENT}'
    ' WHERE st."study_uid" = ?'
)


def lookup(entry: Entry) -> Prior:
    """Where the index holds the entry's instance, series and study now (one statement)."""
    found: dict[int, Held] = {}
    for kind, *row in execute(_SQL_LOOKUP, [entry.sop_uid, entry.series_uid, entry.study_uid]).fetchall():
        found[kind] = Held(*row)
    return Prior(found.get(1), found.get(2), found.get(3))


def _short(text: str, uid: str) -> str:
    """``text + uid`` when it fits an ErrorComment (64 characters), else as much of *uid* as fits."""
    return text + uid if len(text) + len(uid) <= 64 else uid[:64]


def conflict(prior: Prior, entry: Entry) -> Conflict | None:
    """The conflict between what is held and *entry*, or None when the entry fits in."""
    held = prior.instance
    if held is not None and (held.series_uid != entry.series_uid or held.study_uid != entry.study_uid):
        return Conflict(
            "instance",
            f"SOP Instance UID {entry.sop_uid} is already held in study {held.study_uid} "
            f"(series {held.series_uid}, patient ID {held.patient_id!r}); this data set names study "
            f"{entry.study_uid} (series {entry.series_uid}, patient ID {entry.patient_id!r})",
            _short("already in study ", held.study_uid),
            held,
        )
    held = prior.series
    if held is not None and held.study_uid != entry.study_uid:
        return Conflict(
            "series",
            f"Series Instance UID {entry.series_uid} is already held in study {held.study_uid} "
            f"(patient ID {held.patient_id!r}); this data set names study {entry.study_uid}",
            _short("series in study ", held.study_uid),
            held,
        )
    held = prior.study
    if held is not None and held.patient_id != entry.patient_id:
        return Conflict(
            "study",
            f"Study Instance UID {entry.study_uid} is already held for patient ID {held.patient_id!r}; "
            f"this data set names patient ID {entry.patient_id!r}",
            _short("study held for patient ID ", held.patient_id),
            held,
        )
    return None


# -- writing -----------------------------------------------------------------


def _q(name: str) -> str:
    return f'"{name}"'


def _upsert_sql(
    table: str, key: str, columns: tuple[str, ...], *, parent: str | None = None, move: bool = True
) -> str:
    """INSERT ... ON CONFLICT (key) DO UPDATE ... RETURNING id, for one level.

    Empty incoming values never overwrite stored ones (an instance without
    StudyDescription leaves the study's alone); ``updated_at`` always moves,
    which is what invalidates caches built from the study.  With *move* the
    parent link is set from the entry (a move); without, a row held under
    another parent is left alone and no id comes back: the conflict is found
    by the statement that writes, with no lookup before it.
    """
    cols = [key, *([parent] if parent else []), *columns, "created_at", "updated_at"]
    sets = [
        f"{_q(c)} = COALESCE(excluded.{_q(c)}, {_q(table)}.{_q(c)})"
        if c in _INTEGER
        else f"{_q(c)} = CASE WHEN excluded.{_q(c)} = '' THEN {_q(table)}.{_q(c)} ELSE excluded.{_q(c)} END"
        for c in columns
    ]
    where = ""
    if parent and move:
        sets.append(f"{_q(parent)} = excluded.{_q(parent)}")
    elif parent:
        where = f" WHERE {_q(table)}.{_q(parent)} = excluded.{_q(parent)}"
    sets.append('"updated_at" = excluded."updated_at"')
    return (
        f"INSERT INTO {_q(table)} ({', '.join(map(_q, cols))}) VALUES ({', '.join('?' * len(cols))}) "
        f'ON CONFLICT ({_q(key)}) DO UPDATE SET {", ".join(sets)}{where} RETURNING "id"'
    )


def _instance_sql(*, move: bool) -> str:
    """The instance row, inserted or overwritten whole; without *move* only in its own series."""
    cols = ["sop_uid", "series_id", *INSTANCE_COLUMNS]
    sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in cols[1:])
    where = "" if move else ' WHERE "instance"."series_id" = excluded."series_id"'
    return (
        f'INSERT INTO "instance" ({", ".join(map(_q, cols))}) VALUES ({", ".join("?" * len(cols))}) '
        f'ON CONFLICT ("sop_uid") DO UPDATE SET {sets}{where} RETURNING "id"'
    )


@dataclass(frozen=True)
class _Statements:
    study: str
    series: str
    instance: str


_SQL_PATIENT = _upsert_sql("patient", "patient_id", PATIENT_COLUMNS)
# "reject": a row under another parent is left alone (no id back: a conflict).
_KEEP = _Statements(
    _upsert_sql("study", "study_uid", STUDY_COLUMNS, parent="patient_id", move=False),
    _upsert_sql("series", "series_uid", SERIES_COLUMNS, parent="study_id", move=False),
    _instance_sql(move=False),
)
# "replace": the entry's parents win.
_MOVE = _Statements(
    _upsert_sql("study", "study_uid", STUDY_COLUMNS, parent="patient_id"),
    _upsert_sql("series", "series_uid", SERIES_COLUMNS, parent="study_id"),
    _instance_sql(move=True),
)
_SQL_TOUCH_SERIES = 'UPDATE "series" SET "updated_at" = ? WHERE "id" = ?'
_SQL_TOUCH_STUDY = 'UPDATE "study" SET "updated_at" = ? WHERE "id" = ?'
# Delete a row of the level once nothing below refers to it.
_SQL_PRUNE = {
    table: f'DELETE FROM "{table}" WHERE "id" = ? AND NOT EXISTS (SELECT 1 FROM "{child}" WHERE "{link}" = ?)'
    for table, child, link in (
        ("series", "instance", "series_id"),
        ("study", "series", "study_id"),
        ("patient", "study", "patient_id"),
    )
}


def _prune(table: str, row_id: int) -> None:
    execute(_SQL_PRUNE[table], [row_id, row_id])


def file_instance(
    entry: Entry,
    file: dict[str, object],
    *,
    replace: bool,
    inside: Callable[[Instance], None] | None = None,
    now: dt.datetime,
) -> Filed:
    """File *entry* (stored as *file*: path, size, received_at, calling_aet, source) in one transaction.

    Raises :class:`Conflict` (nothing written) when the entry is held
    elsewhere and *replace* is false.  *inside* runs in the transaction with
    the instance row, so what it writes commits with the instance.

    Without *replace* nothing is looked up first: each statement refuses to
    write under another parent, and only then is the index asked where the
    entry is held (to say so).  With *replace* what is held is looked up
    first, to know what the move leaves behind.
    """
    inst = {**entry.instance, **file}
    with write_transaction():
        prior = lookup(entry) if replace else None
        clash = conflict(prior, entry) if prior is not None else None
        sql = _MOVE if replace else _KEEP
        (patient_row,) = execute(
            _SQL_PATIENT, [entry.patient_id, *(entry.patient[c] for c in PATIENT_COLUMNS), now, now]
        ).fetchone()
        study_row = _one(
            sql.study, [entry.study_uid, patient_row, *(entry.study[c] for c in STUDY_COLUMNS)], now
        )
        if study_row is None:
            raise _held_elsewhere(entry)
        series_row = _one(
            sql.series, [entry.series_uid, study_row, *(entry.series[c] for c in SERIES_COLUMNS)], now
        )
        if series_row is None:
            raise _held_elsewhere(entry)
        row = execute(
            sql.instance, [entry.sop_uid, series_row, *(inst[c] for c in INSTANCE_COLUMNS)]
        ).fetchone()
        if row is None:
            raise _held_elsewhere(entry)
        moved_from = _moved(prior, series_row, study_row, patient_row, now) if prior and clash else None
        instance = Instance(id=row[0], sop_uid=entry.sop_uid, series=series_row, **inst)
        if inside is not None:
            inside(instance)
    held = prior.instance if prior is not None else None
    return Filed(instance, held.path if held else None, held is not None if prior else None, moved_from)


def _one(sql: str, values: list[object], now: dt.datetime) -> int | None:
    row = execute(sql, [*values, now, now]).fetchone()
    return None if row is None else row[0]


def _held_elsewhere(entry: Entry) -> Conflict:
    """The conflict a refusing statement met, looked up to name where the entry is held."""
    clash = conflict(lookup(entry), entry)
    if clash is None:  # pragma: no cover - a statement refused, so something is held elsewhere
        raise RuntimeError(f"{entry.sop_uid}: refused by the index, but held nowhere else")
    return clash


def _moved(prior: Prior, series_row: int, study_row: int, patient_row: int, now: dt.datetime) -> Held | None:
    """After a move: mark the series and studies left as changed; delete the levels left empty.

    Returns where the instance (or its series or study) was filed before.
    """
    held = [h for h in (prior.instance, prior.series, prior.study) if h is not None]
    series_left = {h.series_id for h in held if h.series_id is not None and h.series_id != series_row}
    studies_left = {h.study_id for h in held if h.study_id != study_row}
    patients_left = {h.patient_row for h in held if h.patient_row != patient_row}
    for row in series_left:
        execute(_SQL_TOUCH_SERIES, [now, row])
        _prune("series", row)
    for row in studies_left:
        execute(_SQL_TOUCH_STUDY, [now, row])
        _prune("study", row)
    for row in patients_left:
        _prune("patient", row)
    return next(
        (
            h
            for h in held
            if h.series_id in series_left or h.study_id in studies_left or h.patient_row in patients_left
        ),
        None,
    )
