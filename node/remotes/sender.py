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
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

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
        # 0x0000 success, 0xB000/0xB007/0xB006 warnings (stored with coercion).
        return self.status is not None and (self.status == 0 or self.status & 0xF000 == 0xB000)


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
) -> Association:
    """Associate with *peer* as *calling_ae*; raise SendError naming the peer on failure.

    *ext_neg* (e.g. SCP/SCU role selection for C-GET) and *evt_handlers* are
    passed on to pynetdicom's ``associate``.
    """
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = list(contexts)
    ae.acse_timeout = timeout
    ae.network_timeout = 60
    ae.dimse_timeout = 120
    ae.connection_timeout = timeout
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
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _keep_responses_for_sender(assoc)
    return assoc


def _keep_responses_for_sender(assoc: Association) -> None:
    """Stop the association's own reactor thread from taking DIMSE messages off its queue.

    pynetdicom pauses that reactor around each ``send_c_store`` with a
    flag the reactor sets before it parks; right after one C-STORE the flag is
    still set while the reactor wakes up, so the next C-STORE can start before
    the reactor has parked again, and a quick C-STORE-RSP may then be taken
    by the reactor instead of the sender (which waits out the DIMSE timeout;
    seen under load as a C-MOVE hanging for minutes).  On an association we
    opened only to send, the peer sends us nothing but responses, so the
    reactor never needs the queue.
    """
    dimse = assoc.dimse
    original = dimse.get_msg

    def get_msg(block: bool = False):
        if not block and threading.current_thread() is assoc:
            return None, None
        return original(block)

    dimse.get_msg = get_msg
    assoc._node_send_only = True  # type: ignore[attr-defined]
    # Nothing but our C-STOREs is written to this association: they may go
    # straight to the socket (node.remotes.direct).
    assoc._node_direct = True  # type: ignore[attr-defined]


def _skip_reactor_pause(assoc: Association) -> None:
    """Let ``send_c_store`` start at once on an association set up by _keep_responses_for_sender.

    send_c_store first waits for the reactor to park, which (with the idle
    wait of node.dimse.tuning) can take up to its 5 ms idle wait per instance;
    the reactor cannot take our response there, so there is nothing to wait for.
    """
    if getattr(assoc, "_node_send_only", False):
        assoc._is_paused = True


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
    _skip_reactor_pause(assoc)
    if item.transfer_syntax in accepted and getattr(assoc, "_node_direct", False):
        sent = _store_direct(assoc, item, originator_ae, originator_id)
        if sent is not None:
            return sent
    try:
        if item.transfer_syntax in accepted:
            # Stored bytes as they are: pynetdicom streams the file's data set.
            rsp = assoc.send_c_store(
                item.path, originator_aet=originator_ae or None, originator_id=originator_id
            )
        elif item.transfer_syntax in UNCOMPRESSED:
            ds = dcmread(item.path)
            rsp = assoc.send_c_store(ds, originator_aet=originator_ae or None, originator_id=originator_id)
        else:
            return Sent(
                item,
                None,
                f"the peer does not accept transfer syntax {item.transfer_syntax} for {item.sop_class_uid}",
            )
    except Exception as exc:  # noqa: BLE001 - any failure is this instance's failure
        return Sent(item, None, f"sending failed: {exc}")
    status = getattr(rsp, "Status", None)
    if status is None:
        return Sent(item, None, "no response (association aborted or timed out)")
    return Sent(item, int(status), str(getattr(rsp, "ErrorComment", "") or ""))


def _store_direct(assoc: Association, item: Outgoing, originator_ae: str, originator_id: int | None):
    """store_one through node.remotes.direct; None when that path does not apply to this file."""
    from . import direct

    try:
        status = direct.send_file(
            assoc,
            item.path,
            item.sop_class_uid,
            item.sop_uid,
            item.transfer_syntax,
            originator_ae=originator_ae,
            originator_id=originator_id,
        )
    except direct.NotDirect:
        return None
    except OSError as exc:
        return Sent(item, None, f"sending failed: {exc}")
    if status is None:
        return Sent(item, None, "no response (association aborted or timed out)")
    return Sent(item, status)


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
