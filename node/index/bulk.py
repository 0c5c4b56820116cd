"""Bulk loading of index rows: many rows per round trip, ids chosen by the caller.

For building large indexes quickly (the big-index benchmark; later an
importer of another archive's index) without the per-instance ingest
transaction.  Rows are tuples in the order of the given columns of the
index's own tables, ``id`` included, so that the caller links the levels
without reading ids back.  SQLite gets one prepared INSERT run over all rows
(``executemany``), PostgreSQL a ``COPY``.  Afterwards :func:`finish` moves
PostgreSQL's identity counters past the ids used (SQLite takes max(id) + 1
by itself) and refreshes the planner's statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import peewee

from .db import database, execute, is_postgres, write_transaction


def _table(model: type[peewee.Model]) -> str:
    return f'"{model._meta.table_name}"'


def insert(model: type[peewee.Model], columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Insert *rows* (tuples of *columns*' values) into *model*'s table, in one write transaction."""
    names = ", ".join(f'"{c}"' for c in columns)
    with write_transaction():
        cursor = database.obj.cursor()
        if is_postgres():
            with cursor.copy(f"COPY {_table(model)} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            cursor.executemany(f"INSERT INTO {_table(model)} ({names}) VALUES ({marks})", rows)


def finish(models: Iterable[type[peewee.Model]]) -> None:
    """After loading with explicit ids: move PostgreSQL's id counters on, then ANALYZE each table."""
    for model in models:
        if is_postgres():
            # pg_get_serial_sequence also finds the sequence of an identity column.
            execute(
                f"SELECT setval(pg_get_serial_sequence(?, 'id'), "
                f'COALESCE((SELECT MAX("id") FROM {_table(model)}), 0) + 1, false)',
                [_table(model)],
            )
        database.obj.execute_sql(f"ANALYZE {_table(model)}")
