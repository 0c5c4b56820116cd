"""The pieces every door shares: settings, the store, the open index and the ingest path."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import peewee

from .config import Settings
from .index.db import is_url, open_database
from .index.migrate import migrate
from .ingest import Ingest
from .space import Place, SpaceGuard
from .store import InstanceStore

if TYPE_CHECKING:
    from .remotes.read_through import ReadThrough


@dataclass
class NodeContext:
    """What a running node (or a CLI command) works with.

    ``ingest`` is the one ingest path; whoever assembles the node registers
    its index hooks and listeners there (see :class:`node.ingest.Ingest`).
    """

    settings: Settings
    store: InstanceStore
    db: peewee.Database
    ingest: Ingest
    space: SpaceGuard
    started_at: float = field(default_factory=time.time)
    # Retrieval on a miss (node/remotes/read_through.py), set where the node is assembled.
    read_through: ReadThrough | None = None


def open_index(settings: Settings) -> peewee.Database:
    """Open (and bind) the index database ``[storage].database`` names; no migrations."""
    return open_database(
        settings.storage.database,
        durable=settings.storage.fsync,
        pool_size=settings.storage.database_connections,
    )


def open_context(settings: Settings) -> NodeContext:
    """Open the store and the index, applying pending migrations."""
    s = settings.storage
    store = InstanceStore(s.path, fsync=s.fsync)
    db = open_index(settings)
    migrate(db)
    places = [Place("storage", store.root)]
    if not is_url(s.database):  # a PostgreSQL server watches its own disk
        places.append(Place("index", s.database.parent))
    space = SpaceGuard(places, s.min_free_bytes)
    ingest = Ingest(store, duplicates=s.duplicates, space=space, transcode_to=s.transcode_to)
    return NodeContext(settings=settings, store=store, db=db, ingest=ingest, space=space)
