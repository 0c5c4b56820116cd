"""Database setup: one peewee database object for the process, bound at start.

SQLite runs in WAL mode (many readers, one writer) with a busy timeout;
peewee keeps one connection per thread, which suits pynetdicom's thread per
association.  Write transactions are taken IMMEDIATE so that two writers
queue on the busy timeout instead of failing on a read-to-write upgrade.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peewee

database = peewee.DatabaseProxy()

BUSY_TIMEOUT_MS = 30_000


def open_database(path: Path, *, durable: bool = True) -> peewee.SqliteDatabase:
    """Open (creating its folder) the SQLite index at *path* and bind the models to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = peewee.SqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "busy_timeout": BUSY_TIMEOUT_MS,
            # FULL: a commit is on disk before we acknowledge the instance.
            "synchronous": "full" if durable else "normal",
            "foreign_keys": 1,
            "cache_size": -16_000,
            # DICOM matching is case-sensitive (person names match on their
            # case-folded copy), as LIKE is in PostgreSQL; see index/query.py.
            "case_sensitive_like": 1,
        },
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    database.initialize(db)
    return db


# Writers of this process queue here rather than on SQLite's busy handler,
# which sleeps and polls: under concurrent ingest the database lock sat idle
# between holders for a good part of the time.  Other processes (a CLI import
# beside the server) still meet the busy timeout.  Re-entrant: a write
# transaction may nest another (peewee turns it into a savepoint).
_write_lock = threading.RLock()


def execute(sql: str, params: list[object] | tuple[object, ...] = ()):
    """Run hand-written SQL (``?`` placeholders) on the bound database; returns the cursor.

    The index's hand-written statements are spelled with ``?``; this is the
    one place they are given the database's own placeholder, so they run on
    PostgreSQL (``%s``) as well as SQLite.  No statement of the index puts a
    literal question mark in its SQL text (values are always parameters).
    """
    db = database.obj
    if db.param != "?":
        sql = sql.replace("?", db.param)
    return db.execute_sql(sql, params)


@contextmanager
def write_transaction() -> Iterator[None]:
    """A short write transaction that takes the write lock up front."""
    db = database.obj
    with _write_lock:
        try:
            with db.atomic("IMMEDIATE") if isinstance(db, peewee.SqliteDatabase) else db.atomic():
                yield
        except peewee.OperationalError as exc:
            # A COMMIT that fails under SQLITE_FULL (or an I/O error) is rolled
            # back by SQLite itself; peewee's ROLLBACK then fails with "cannot
            # rollback - no transaction is active", hiding the real error.
            # Raise the real one (as the cause, so its own chain stays whole).
            hidden = _hidden_by_rollback(exc)
            if hidden is None:
                raise
            raise peewee.OperationalError(str(hidden)) from hidden


def _hidden_by_rollback(exc: BaseException) -> BaseException | None:
    """The error a failed ROLLBACK ("no transaction is active") was raised while handling."""
    if "no transaction is active" not in str(exc):
        return None
    seen: set[int] = set()
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if "no transaction is active" not in str(current):
            return current
        current = current.__cause__ or current.__context__
    return None
