"""Schema statements for migrations, written once for every database the index runs on.

Migrations write their DDL in the SQLite spelling of the first migrations
(``"id" INTEGER NOT NULL PRIMARY KEY``, ``DATETIME``, ``INTEGER`` for every
whole number); :func:`execute` runs it as written on SQLite and is the one
place that translates it for another database.
"""

from __future__ import annotations

from collections.abc import Iterable

import peewee


def execute(db: peewee.Database, statements: Iterable[str]) -> None:
    """Run migration *statements* on *db*, in the dialect *db* speaks."""
    for sql in statements:
        db.execute_sql(translate(db, sql))


def translate(db: peewee.Database, sql: str) -> str:
    """*sql* (SQLite spelling) for *db*'s dialect."""
    if isinstance(db, peewee.SqliteDatabase):
        return sql
    raise NotImplementedError(f"no DDL translation for {type(db).__name__} yet")
