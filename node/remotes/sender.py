"""Send stored instances to another node over C-STORE: the one sending path.

C-MOVE, C-GET's sub-operations use :func:`store_one` on their own
association; C-MOVE, the ``/forward`` gateway and store-and-forward open an
association with :func:`open_association` and send a batch with
:func:`send_batch`.  Each instance goes out as the stored bytes (no
re-encoding) when the peer accepts its stored transfer syntax; an
uncompressed instance falls back to explicit or implicit little endian,
which costs one decode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association, build_context
from pynetdicom.presentation import PresentationContext

from ..dimse import wire
from ..statuses import is_ok

log = logging.getLogger(__name__)

UNCOMPRESSED = {
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired)
}
MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts per association
CONNECT_TIMEOUT_S = 5.0


class SendError(Exception):
    """The remote could not be reached or refused the association; names the remote."""


class NoAcceptedContext(SendError):
    """The remote associated but accepted none of the proposed presentation contexts.

    Unlike an outage this will not change by retrying: the remote does not
    take these SOP classes (in these transfer syntaxes).
    """


@dataclass(frozen=True)
class Peer:
    """Where to send: a remote's AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Outgoing:
    """One stored instance to send (as the index knows it)."""

    path: Path
    sop_class_uid: str
    sop_uid: str
    transfer_syntax: str


@dataclass(frozen=True)
class Sent:
    """The remote's answer for one instance: its DIMSE status, or None if none came."""

    item: Outgoing
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Success or a warning (e.g. 0xB000 stored with coercion): the peer kept it."""
        return is_ok(self.status)


def contexts_for(items: Iterable[Outgoing]) -> list[PresentationContext]:
    """Presentation contexts for *items*: each SOP class with its stored transfer syntaxes.

    Uncompressed data also offers explicit and implicit little endian, so a
    peer that takes only the default syntax still gets it.
    """
    wanted: dict[str, list[str]] = {}
    for item in items:
        syntaxes = wanted.setdefault(item.sop_class_uid, [])
        candidates = [item.transfer_syntax]
        if item.transfer_syntax in UNCOMPRESSED:
            candidates += [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        for ts in candidates:
            if ts not in syntaxes:
                syntaxes.append(ts)
    contexts = [build_context(sop, ts) for sop, ts in wanted.items()]
    if len(contexts) > MAX_CONTEXTS:
        log.warning("%d SOP classes to send; proposing the first %d", len(contexts), MAX_CONTEXTS)
    return contexts[:MAX_CONTEXTS]


def open_association(
    peer: Peer,
    calling_ae: str,
    contexts: Sequence[PresentationContext],
    *,
    timeout: float = CONNECT_TIMEOUT_S,
    max_pdu: int = 0,
    ext_neg: Sequence | None = None,
    evt_handlers: Sequence | None = None,
    send_only: bool = True,
) -> Association:
    """Associate with *peer* as *calling_ae*; raise SendError naming the peer on failure.

    *ext_neg* (e.g. SCP/SCU role selection for C-GET) and *evt_handlers* are
    passed on to pynetdicom's ``associate``.  *send_only*: nothing but
    C-STOREs will be sent on it (the wire layer may then write them itself).
    *max_pdu* 0 advertises the wire layer's bound for "no limit".
    """
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = list(contexts)
    ae.acse_timeout = timeout
    ae.network_timeout = 60
    ae.dimse_timeout = 120
    ae.connection_timeout = timeout
    max_pdu = wire.advertised_max_pdu(max_pdu)
    ae.maximum_pdu_size = max_pdu
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        max_pdu=max_pdu,
        ext_neg=list(ext_neg) if ext_neg else None,
        evt_handlers=list(evt_handlers) if evt_handlers else None,
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            raise SendError(f"{peer} rejected the association from {calling_ae}")
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            offered = sorted({cx.abstract_syntax for cx in contexts})
            raise NoAcceptedContext(f"{peer} accepts none of the SOP classes offered ({', '.join(offered)})")
        raise SendError(f"{peer} could not be reached (connection refused or timed out)")
    wire.prepare(assoc, send_only=send_only)
    return assoc


def _accepted_syntaxes(assoc: Association, sop_class: str) -> set[str]:
    return {
        cx.transfer_syntax[0]
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.transfer_syntax
    }


def store_one(
    assoc: Association,
    item: Outgoing,
    *,
    originator_ae: str = "",
    originator_id: int | None = None,
) -> Sent:
    """C-STORE one stored instance on an established association (sender or C-GET's)."""
    accepted = _accepted_syntaxes(assoc, item.sop_class_uid)
    if not accepted:
        return Sent(item, None, f"the peer accepted no context for SOP class {item.sop_class_uid}")
    originator = {"originator_ae": originator_ae, "originator_id": originator_id}
    try:
        # The one place that decides how an instance goes out; a transcoder for
        # peers that take none of its stored syntax would be called here.
        if item.transfer_syntax in accepted:
            # Stored bytes as they are, streamed from the file.
            status, comment = wire.send_file(
                assoc, item.path, item.sop_class_uid, item.sop_uid, item.transfer_syntax, **originator
            )
        elif item.transfer_syntax in UNCOMPRESSED:
            status, comment = wire.send_dataset(assoc, dcmread(item.path), **originator)
        else:
            return Sent(
                item,
                None,
                f"the peer does not accept transfer syntax {item.transfer_syntax} for {item.sop_class_uid}",
            )
    except Exception as exc:  # noqa: BLE001 - any failure is this instance's failure
        return Sent(item, None, f"sending failed: {exc}")
    if status is None:
        return Sent(item, None, "no response (association aborted or timed out)")
    return Sent(item, status, comment)


def send_batch(
    peer: Peer,
    calling_ae: str,
    items: Sequence[Outgoing],
    *,
    on_sent: Callable[[Sent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    originator_ae: str = "",
    originator_id: int | None = None,
) -> list[Sent]:
    """Send *items* to *peer* over one association; raise SendError if it cannot be opened."""
    results: list[Sent] = []
    if not items:
        return results
    assoc = open_association(peer, calling_ae, contexts_for(items))
    try:
        for item in items:
            if should_stop and should_stop():
                break
            sent = store_one(assoc, item, originator_ae=originator_ae, originator_id=originator_id)
            results.append(sent)
            if on_sent:
                on_sent(sent)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def outgoing(store, instance) -> Outgoing:
    """The :class:`Outgoing` for an index ``Instance`` row held in *store*."""
    return Outgoing(
        path=store.absolute(instance.path),
        sop_class_uid=instance.sop_class_uid,
        sop_uid=instance.sop_uid,
        transfer_syntax=instance.transfer_syntax,
    )
