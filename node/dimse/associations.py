"""One log line per association: who called, from where, what it did, how it ended."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pynetdicom import evt

log = logging.getLogger("node.dimse")


@dataclass
class AssociationStats:
    started: float = field(default_factory=time.monotonic)
    counts: dict[str, int] = field(default_factory=dict)
    ending: str = "closed"
    rejected: bool = False

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


def stats(assoc) -> AssociationStats:
    """The counters attached to an association (created on first use)."""
    found = getattr(assoc, "_node_stats", None)
    if found is None:
        found = AssociationStats()
        assoc._node_stats = found
    return found


def _on_open(event) -> None:
    from .ae import set_nodelay

    set_nodelay(event.assoc.dul.socket.socket)
    stats(event.assoc)


def _ending(what: str):
    def handler(event) -> None:
        stats(event.assoc).ending = what

    return handler


def _on_close(event) -> None:
    assoc = event.assoc
    st = stats(assoc)
    peer = assoc.requestor
    if st.rejected or not peer.ae_title:
        # Rejections are logged on their own; a bare TCP probe is not an association.
        return
    done = ", ".join(f"{n} {k}" for k, n in sorted(st.counts.items())) or "nothing done"
    log.info(
        "association %s from %s:%s to %s: %s; %s in %.2fs",
        peer.ae_title,
        peer.address,
        peer.port,
        assoc.acceptor.ae_title,
        done,
        st.ending,
        time.monotonic() - st.started,
    )


def _on_rejected(event) -> None:
    assoc = event.assoc
    stats(assoc).rejected = True
    peer = assoc.requestor
    log.warning(
        "association %s from %s:%s rejected (calling AE not allowed or no usable context)",
        peer.ae_title,
        peer.address,
        peer.port,
    )


def handlers() -> list:
    """Handlers that keep the per-association counters and log the outcome."""
    return [
        (evt.EVT_CONN_OPEN, _on_open),
        (evt.EVT_RELEASED, _ending("released")),
        (evt.EVT_ABORTED, _ending("aborted")),
        (evt.EVT_REJECTED, _on_rejected),
        (evt.EVT_CONN_CLOSE, _on_close),
    ]
