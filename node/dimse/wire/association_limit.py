"""The node-wide association limit inside pynetdicom, when several workers serve one port.

pynetdicom refuses an association (A-ASSOCIATE-RJ, local limit exceeded)
when its own AE holds more acceptors than ``maximum_associations``, which
counts one process.  With workers the AE instead asks the shared slots
(node.workers.slots): the association's thread takes a slot while
pynetdicom negotiates it, and gives it back when its connection closes.
The answer, the log line and the rest of pynetdicom's negotiation stay as
they are.
"""

from __future__ import annotations

import threading

from pynetdicom import AE, evt
from pynetdicom.association import Association

from ...workers.slots import AssociationSlots

_SLOT = "_node_slot"
UNLIMITED = 1 << 30


def limit(ae: AE, slots: AssociationSlots) -> list:
    """Make *ae* count associations in *slots*; returns the handlers to bind (slot release)."""

    class SharedLimitAE(type(ae)):  # type: ignore[misc]
        @property
        def maximum_associations(self) -> int:
            # Read by pynetdicom's ACSE in the thread of the association it negotiates.
            assoc = threading.current_thread()
            if not isinstance(assoc, Association) or not assoc.is_acceptor:
                return slots.count
            if getattr(assoc, _SLOT, None) is None:
                slot = slots.take()
                if slot is None:
                    return -1  # any count exceeds it: rejected as local-limit-exceeded
                setattr(assoc, _SLOT, slot)
            return UNLIMITED

        @maximum_associations.setter
        def maximum_associations(self, value: int) -> None:
            self._maximum_associations = value

    ae.__class__ = SharedLimitAE
    return [(evt.EVT_CONN_CLOSE, _release, [slots])]


def _release(event, slots: AssociationSlots) -> None:
    slot = getattr(event.assoc, _SLOT, None)
    if slot is not None:
        setattr(event.assoc, _SLOT, None)
        slots.give_back(slot)
