"""One log line per association: who called, from where, what it did, how it ended or why it was refused."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pynetdicom import evt

from ..config import DicomSettings
from . import wire

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
    ending = "aborted by the node" if wire.refusal(assoc) else st.ending
    log.info(
        "association %s from %s:%s to %s: %s; %s in %.2fs",
        peer.ae_title,
        peer.address,
        peer.port,
        assoc.acceptor.ae_title,
        done,
        ending,
        time.monotonic() - st.started,
    )


def rejection_reason(result_source: int, diagnostic: int, assoc, settings: DicomSettings) -> str:
    """Why pynetdicom rejected *assoc*, from the A-ASSOCIATE-RJ it sent (PS3.8 9.3.4)."""
    peer = assoc.requestor
    if result_source == 0x01 and diagnostic == 0x03:
        return f"calling AE title {peer.ae_title!r} is not in [dicom].allowed_calling_aets"
    if result_source == 0x01 and diagnostic == 0x07:
        return (
            f"called AE title {peer.primitive.called_ae_title!r} is not this node's ({settings.ae_title!r})"
        )
    if result_source == 0x01 and diagnostic == 0x02:
        return "application context name not supported"
    if result_source == 0x03 and diagnostic == 0x02:
        active = sum(1 for a in assoc.ae.active_associations if a.is_acceptor)
        return (
            f"too many associations ({active} open, [dicom].max_associations = {settings.max_associations})"
        )
    if result_source == 0x02 and diagnostic == 0x01:
        return "user identity not accepted"
    return f"source {result_source}, reason {diagnostic}"


def handlers(settings: DicomSettings) -> list:
    """Handlers that keep the per-association counters and log the outcome."""

    def on_rejected(event) -> None:
        assoc = event.assoc
        stats(assoc).rejected = True
        peer = assoc.requestor
        answer = assoc.acceptor.primitive
        reason = rejection_reason(answer.result_source, answer.diagnostic, assoc, settings)
        log.warning("association %s from %s:%s rejected: %s", peer.ae_title, peer.address, peer.port, reason)

    def on_accepted(event) -> None:
        assoc = event.assoc
        if assoc.accepted_contexts:
            return
        peer = assoc.requestor
        proposed = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts})
        log.warning(
            "association %s from %s:%s: no usable presentation context (proposed: %s)",
            peer.ae_title,
            peer.address,
            peer.port,
            ", ".join(proposed[:5]) + (", ..." if len(proposed) > 5 else ""),
        )

    return [
        (evt.EVT_CONN_OPEN, _on_open),
        (evt.EVT_ACCEPTED, on_accepted),
        (evt.EVT_RELEASED, _ending("released")),
        (evt.EVT_ABORTED, _ending("aborted")),
        (evt.EVT_REJECTED, on_rejected),
        (evt.EVT_CONN_CLOSE, _on_close),
    ]
