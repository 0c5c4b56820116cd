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


class SchemaTooNew(RuntimeError):
    """The index records migrations this version does not know: a newer version wrote it."""


def _recorded(db: peewee.Database) -> set[str]:
    with write_transaction():
        db.create_tables([SchemaMigration], safe=True)
    return _done()


def _done() -> set[str]:
    return {row.name for row in SchemaMigration.select(SchemaMigration.name)}


def pending(db: peewee.Database) -> list[str]:
    """Migrations not yet recorded in *db*."""
    done = _recorded(db)
    return [name for name in available() if name not in done]


def unknown(db: peewee.Database) -> list[str]:
    """Migrations recorded in *db* that this version does not have (a newer version applied them)."""
    return sorted(_recorded(db) - set(available()))


def check_not_newer(db: peewee.Database) -> None:
    """Raise SchemaTooNew when *db* was migrated by a newer version of the node.

    Running on such an index could misread or damage what the newer schema
    holds; the operator upgrades the node again or restores a backup.
    """
    newer = unknown(db)
    if newer:
        from .. import __version__

        raise SchemaTooNew(
            f"the index {db.database} was written by a newer dicom-node: it records migration(s) "
            f"{', '.join(newer)}, which dicom-node {__version__} does not know. Run the newer "
            "version, or restore the backup taken before the upgrade (docs/upgrade-and-backup.md)"
        )


def migrate(db: peewee.Database) -> list[str]:
    """Apply every pending migration, each in its own transaction; return their names.

    Raises SchemaTooNew (and changes nothing) for an index of a newer version.
    Each runs under the index's write lock and is checked again inside it,
    so that two processes starting together on one database (a CLI command
    beside the server, two nodes on one PostgreSQL) apply it once.
    """
    check_not_newer(db)
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
