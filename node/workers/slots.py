"""``[dicom].max_associations`` for the whole node, not per worker process.

One small file in the supervisor's run folder; an association holds a slot
while it lasts by taking a POSIX record lock on one byte of it (byte *i* is
slot *i*).  The kernel keeps the count across processes and frees a killed
worker's slots with it, so a crash can never leak capacity.  Record locks
belong to the process, so the threads of one worker keep their own set of
the slots they hold.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
from pathlib import Path

FILE_NAME = "association-slots"


class AssociationSlots:
    """*count* slots shared by every process opening the same *folder*."""

    def __init__(self, folder: Path, count: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.count = count
        self._fd = os.open(folder / FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """A free slot, now held by this process; None when the node is at its limit."""
        start = random.randrange(self.count)  # spreads the workers' first tries
        with self._lock:
            for k in range(self.count):
                slot = (start + k) % self.count
                if slot in self._held:
                    continue
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
                except OSError:
                    continue  # another worker holds it
                self._held.add(slot)
                return slot
        return None

    def give_back(self, slot: int) -> None:
        """Free *slot* (taken by :meth:`take`)."""
        with self._lock:
            if slot in self._held:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot)
                self._held.discard(slot)

    def held_here(self) -> int:
        """Slots this process holds."""
        with self._lock:
            return len(self._held)
