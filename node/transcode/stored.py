"""Which transfer syntaxes the node stores each SOP class in: what a C-GET acceptor needs at negotiation.

A C-GET's storage contexts are negotiated before its identifier names any
instance, so "accept the stored syntax when the peer offers it"
(:func:`.negotiate.acceptor_syntax`) needs to know what the node stores,
per SOP class.  :class:`StoredSyntaxes` keeps that in memory: loaded from
the index in a background thread (one scan, at start and then at most every
:data:`MAX_AGE_S` when asked), and added to by the ingest path as instances
are filed.  It is a hint: a stale answer only makes the node convert an
instance it could have sent as stored, never send what the peer did not
accept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_AGE_S = 300.0  # another process's ingests (workers) are seen within this


class StoredSyntaxes:
    """SOP class -> transfer syntaxes stored; :meth:`of` answers None while nothing is loaded."""

    def __init__(
        self, load: Callable[[], dict[str, frozenset[str]]], *, max_age_s: float = MAX_AGE_S
    ) -> None:
        self._load = load
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._by_class: dict[str, set[str]] | None = None
        self._loaded_at = 0.0
        self._loading = False

    def of(self, sop_class: str) -> frozenset[str] | None:
        """The syntaxes *sop_class* is stored in (empty: none known), or None before the first load."""
        with self._lock:
            stale = not self._loading and time.monotonic() - self._loaded_at > self._max_age_s
            known = self._by_class
            found = frozenset(known.get(sop_class, ())) if known is not None else None
        if stale:
            self.refresh_in_background()
        return found

    def add(self, sop_class: str, syntax: str) -> None:
        """An instance of *sop_class* was filed in *syntax* (an ingest index hook; quick)."""
        with self._lock:
            if self._by_class is not None:
                self._by_class.setdefault(sop_class, set()).add(syntax)

    def refresh(self) -> None:
        """Read the index now (in the calling thread)."""
        started = time.monotonic()
        try:
            loaded = self._load()
        except Exception as exc:  # noqa: BLE001 - a hint: keep what is known, retry later
            log.warning("could not read the stored transfer syntaxes from the index: %s", exc)
            with self._lock:
                self._loading = False
                self._loaded_at = time.monotonic()
            return
        with self._lock:
            first = self._by_class is None
            fresh = {sop_class: set(syntaxes) for sop_class, syntaxes in loaded.items()}
            # What was filed while the scan ran is kept: it may not be in what the scan saw.
            for sop_class, syntaxes in (self._by_class or {}).items():
                fresh.setdefault(sop_class, set()).update(syntaxes)
            self._by_class = fresh
            self._loaded_at = time.monotonic()
            self._loading = False
        log.log(
            logging.INFO if first else logging.DEBUG,
            "stored transfer syntaxes of %d SOP classes read in %.3fs",
            len(fresh),
            time.monotonic() - started,
        )

    def refresh_in_background(self) -> None:
        """Start :meth:`refresh` in a daemon thread unless one is running."""
        with self._lock:
            if self._loading:
                return
            self._loading = True
        threading.Thread(target=self.refresh, name="stored-syntaxes", daemon=True).start()
