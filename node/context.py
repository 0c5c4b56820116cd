"""The pieces every door shares: settings, the store and the open index."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import peewee

from .config import Settings
from .index.db import open_database
from .index.migrate import migrate
from .store import InstanceStore


@dataclass
class NodeContext:
    """What a running node (or a CLI command) works with."""

    settings: Settings
    store: InstanceStore
    db: peewee.Database
    started_at: float = field(default_factory=time.time)


def open_index(settings: Settings) -> peewee.Database:
    """Open (and bind) the index database ``[storage].database`` names; no migrations."""
    return open_database(
        settings.storage.database,
        durable=settings.storage.fsync,
        pool_size=settings.storage.database_connections,
    )


def open_context(settings: Settings) -> NodeContext:
    """Open the store and the index, applying pending migrations."""
    store = InstanceStore(settings.storage.path, fsync=settings.storage.fsync)
    db = open_index(settings)
    migrate(db)
    return NodeContext(settings=settings, store=store, db=db)
