"""Free space of the folders the node writes to: refuse new data before a disk is full.

``[storage].min_free_bytes`` is the floor.  ``statvfs`` runs at most once per
:data:`INTERVAL` seconds per folder, not per instance; in between, the bytes
admitted since the last look are subtracted from what it found, so a burst
of instances cannot run far past the floor before the next look.  Below the
floor the ingest path refuses (C-STORE 0xA700, STOW-RS 507) and ``/health``
says ``degraded`` with the reason.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

INTERVAL = 1.0  # seconds between two statvfs of the same folder


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@dataclass(frozen=True)
class Place:
    """A folder the node writes to and what it holds (for messages): "storage", "index"."""

    label: str
    path: Path


class SpaceGuard:
    """Is there room for more data in every place the node writes to?"""

    def __init__(self, places: list[Place], min_free_bytes: int, *, interval: float = INTERVAL) -> None:
        self.min_free = min_free_bytes
        self.interval = interval
        # Places on the same file system are looked at once, under the first label.
        seen: dict[int, Place] = {}
        for place in places:
            try:
                device = os.stat(place.path).st_dev
            except OSError:
                device = -len(seen) - 1  # not there yet: look at it on its own
            seen.setdefault(device, place)
        self.places = list(seen.values())
        self._lock = threading.Lock()
        self._looked_at = float("-inf")
        self._free: dict[str, int | None] = {}
        self._admitted = 0

    def _look(self) -> None:
        for place in self.places:
            try:
                st = os.statvfs(place.path)
                self._free[place.label] = st.f_bavail * st.f_frsize
            except OSError:
                self._free[place.label] = None  # cannot tell: do not refuse for it
        self._admitted = 0
        self._looked_at = time.monotonic()

    def free(self) -> dict[str, int | None]:
        """Estimated free bytes per place (statvfs at most once per interval)."""
        with self._lock:
            if time.monotonic() - self._looked_at >= self.interval:
                self._look()
            return {k: (None if v is None else v - self._admitted) for k, v in self._free.items()}

    def refusal(self) -> str | None:
        """Why new data must be refused now (free space below the floor), or None."""
        if self.min_free <= 0:
            return None
        estimates = self.free()
        for place in self.places:
            free = estimates.get(place.label)
            if free is not None and free < self.min_free:
                return (
                    f"{place.label} almost full: {_mb(max(free, 0))} free on {place.path}, "
                    f"below [storage].min_free_bytes ({_mb(self.min_free)})"
                )
        return None

    def admitted(self, size: int) -> None:
        """Count *size* bytes written since the last look."""
        with self._lock:
            self._admitted += size

    def status(self) -> dict[str, object]:
        """For ``/health``: free bytes per place and the floor."""
        return {
            "min_free_bytes": self.min_free,
            **{f"{label}_free_bytes": free for label, free in self.free().items()},
        }
