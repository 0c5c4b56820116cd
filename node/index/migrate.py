"""Apply the numbered migrations of the ``migrations`` package, once each."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import peewee

import migrations

from .db import write_transaction
from .models import SchemaMigration

log = logging.getLogger(__name__)


def available() -> list[str]:
    """Migration module names, in the order they apply."""
    return sorted(m.name for m in pkgutil.iter_modules(migrations.__path__) if m.name[:4].isdigit())


def _done() -> set[str]:
    return {row.name for row in SchemaMigration.select(SchemaMigration.name)}


def pending(db: peewee.Database) -> list[str]:
    """Migrations not yet recorded in *db*."""
    with write_transaction():
        db.create_tables([SchemaMigration], safe=True)
    done = _done()
    return [name for name in available() if name not in done]


def migrate(db: peewee.Database) -> list[str]:
    """Apply every pending migration, each in its own transaction; return their names.

    Each runs under the index's write lock and is checked again inside it,
    so that two processes starting together on one database (a CLI command
    beside the server, two nodes on one PostgreSQL) apply it once.
    """
    applied = []
    for name in pending(db):
        module = importlib.import_module(f"migrations.{name}")
        with write_transaction():
            if name in _done():
                continue
            module.apply(db)
            SchemaMigration.create(name=name)
        log.info("applied migration %s", name)
        applied.append(name)
    return applied
