"""Last-access tracking: which studies clients read, written to the index at most once a minute each.

The doors' lookups tell the store which instances a request retrieves
(:meth:`node.store.InstanceStore.note_reads`); :class:`AccessTracker` is
the store's listener.  A viewer reading a study frame by frame makes
hundreds of requests a minute: the first read of a study writes
``study.accessed_at``, the next ones within :data:`INTERVAL_S` only touch a
dictionary.  Eviction needs an order, not a stopwatch, so a minute's lag
is fine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import peewee

from ..index import access
from ..index.models import utcnow
from ..store import study_of

log = logging.getLogger(__name__)

INTERVAL_S = 60.0
REMEMBERED = 10_000  # studies remembered between prunings: bounded memory


class AccessTracker:
    """Records reads of studies in the index, throttled per study (see the module docstring)."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, relatives: Iterable[str]) -> None:
        """Note reads of the instances at *relatives* (store-relative paths)."""
        now = time.monotonic()
        due: list[str] = []
        with self._lock:
            for relative in relatives:
                study = study_of(relative)
                last = self._seen.get(study)
                if last is not None and now - last < self.interval_s:
                    continue
                self._seen[study] = now
                due.append(study)
            if len(self._seen) > REMEMBERED:
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.interval_s}
        if not due:
            return
        try:
            access.record(due, utcnow())
        except (peewee.DatabaseError, OSError) as exc:
            # A read is served whatever happens to its bookkeeping (e.g. a full index disk).
            log.warning("could not record the access to %d stud(ies): %s", len(due), exc)
            with self._lock:
                for study in due:
                    self._seen.pop(study, None)
