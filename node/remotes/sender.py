"""Send stored instances to another node over C-STORE: the one sending path.

C-MOVE, C-GET's sub-operations use :func:`store_one` on their own
association; C-MOVE, the ``/forward`` gateway and store-and-forward open an
association with :func:`open_association` and send a batch with
:func:`send_batch`.

What goes out follows :mod:`node.transcode.negotiate`, the same rules for
every door: the stored bytes (no re-encoding) whenever the peer accepted
the stored transfer syntax; else a conversion to the syntax the peer
prefers among those the node can produce without loss (explicit or
implicit VR little endian for an uncompressed instance only changes the
encoding; a compressed one is decoded frame by frame into a temp file that
is deleted once sent).  As a requestor the node proposes the stored syntax,
explicit and implicit VR little endian in separate presentation contexts
(:func:`contexts_for`), so a peer that takes only the default syntax still
gets every instance.  Each conversion is recorded on :class:`Sent`, counted
(``dicom_node_transcoded_total``) and summed per association
(:func:`transcoded`) for the door's association log line.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import AE, Association, build_context
from pynetdicom.presentation import PresentationContext

from .. import metrics
from ..dimse import wire
from ..statuses import is_ok
from ..transcode import Action, Plan, TranscodeError, plan, requestor_syntaxes, transcode_file

log = logging.getLogger(__name__)

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
    # Where a conversion for a peer is written (the store's temp folder: same disk, same space guard).
    tmp_dir: Path | None = None


@dataclass(frozen=True)
class Sent:
    """The remote's answer for one instance: its DIMSE status, or None if none came.

    *refused*: not sent for a reason of the node's own that retrying on
    this association will not change (no accepted context can carry it, it
    cannot be converted); without it a missing status means the association
    failed.  *transcoded_to*: the transfer syntax it was converted to, ""
    when the stored bytes went out.
    """

    item: Outgoing
    status: int | None
    error: str = ""
    refused: bool = False
    transcoded_to: str = ""

    @property
    def ok(self) -> bool:
        """Success or a warning (e.g. 0xB000 stored with coercion): the peer kept it."""
        return is_ok(self.status)


def contexts_for(items: Iterable[Outgoing]) -> list[PresentationContext]:
    """Presentation contexts for *items*: one per SOP class and transfer syntax.

    For each instance the stored syntax, explicit and implicit VR little
    endian (:func:`node.transcode.requestor_syntaxes`), each in a context of
    its own: a peer accepts one syntax per context, so separate contexts let
    it take the stored bytes and still have the default to fall back on.
    The stored syntaxes of all items come first, so that the fallbacks are
    what is cut when the 128 contexts of PS3.8 do not suffice.
    """
    stored: list[tuple[str, str]] = []
    fallbacks: list[tuple[str, str]] = []
    for item in items:
        first, *rest = requestor_syntaxes(item.transfer_syntax)
        stored.append((item.sop_class_uid, first))
        fallbacks.extend((item.sop_class_uid, ts) for ts in rest)
    pairs = list(dict.fromkeys(stored + fallbacks))  # in order, once each
    if len(pairs) > MAX_CONTEXTS:
        log.warning("%d presentation contexts to propose; proposing the first %d", len(pairs), MAX_CONTEXTS)
    return [build_context(sop, ts) for sop, ts in pairs[:MAX_CONTEXTS]]


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


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """The transfer syntaxes *assoc* accepted for *sop_class*, in context order (the proposer's)."""
    contexts = sorted(assoc.accepted_contexts, key=lambda cx: cx.context_id or 0)
    out: list[str] = []
    for cx in contexts:
        if cx.abstract_syntax == sop_class and cx.transfer_syntax and cx.transfer_syntax[0] not in out:
            out.append(str(cx.transfer_syntax[0]))
    return out


def plan_for(assoc: Association, item: Outgoing) -> Plan:
    """How *item* would go out on *assoc*: as stored, converted to a syntax, or not at all."""
    accepted = accepted_syntaxes(assoc, item.sop_class_uid)
    if not accepted:
        return Plan(Action.CANNOT, reason=f"the peer accepted no context for SOP class {item.sop_class_uid}")
    verdict = plan(item.transfer_syntax, accepted)
    if verdict.action is Action.CANNOT:
        # "does not accept": the /forward gateway reads it as "no context" (0x0122).
        why = f"the peer does not accept transfer syntax {item.transfer_syntax} for {item.sop_class_uid}"
        return Plan(Action.CANNOT, reason=f"{why} ({', '.join(accepted)} accepted): {verdict.reason}")
    return verdict


def can_send(assoc: Association, item: Outgoing) -> bool:
    """Could *item* go out on *assoc* (as stored or converted)?"""
    return plan_for(assoc, item).action is not Action.CANNOT


def transcoded(assoc: Association) -> dict[str, int]:
    """How many instances were converted on *assoc* so far, by target transfer syntax."""
    return dict(getattr(assoc, "_node_transcoded", {}))


def transcoded_note(assoc: Association) -> str:
    """``", 2 transcoded (2 to 1.2.840.10008.1.2)"`` for an association log line, or ""."""
    counts = transcoded(assoc)
    if not counts:
        return ""
    detail = ", ".join(f"{n} to {ts}" for ts, n in sorted(counts.items()))
    return f", {sum(counts.values())} transcoded ({detail})"


def _count_transcoded(assoc: Association, target: str) -> None:
    counts = getattr(assoc, "_node_transcoded", None)
    if counts is None:
        counts = assoc._node_transcoded = {}
    counts[target] = counts.get(target, 0) + 1
    metrics.transcoded(target)


def store_one(
    assoc: Association,
    item: Outgoing,
    *,
    originator_ae: str = "",
    originator_id: int | None = None,
) -> Sent:
    """C-STORE one stored instance on an established association (sender or C-GET's).

    The one place that decides how an instance goes out (see the module
    docstring): as stored when accepted, else converted, else refused.
    """
    verdict = plan_for(assoc, item)
    if verdict.action is Action.CANNOT:
        return Sent(item, None, verdict.reason, refused=True)
    originator = {"originator_ae": originator_ae, "originator_id": originator_id}
    if verdict.action is Action.AS_STORED:
        return _sent(
            item,
            lambda: wire.send_file(
                assoc, item.path, item.sop_class_uid, item.sop_uid, item.transfer_syntax, **originator
            ),
        )
    target = verdict.syntax
    started = time.perf_counter()
    try:
        converted = transcode_file(
            item.path, item.transfer_syntax, target, item.tmp_dir or Path(tempfile.gettempdir())
        )
    except TranscodeError as exc:  # the door logs the reason with its outcome
        return Sent(item, None, f"cannot be converted for the peer: {exc}", refused=True)
    except OSError as exc:
        # A missing file will not come back; a full temp folder may clear: not refused, retried.
        refused = isinstance(exc, FileNotFoundError)
        return Sent(item, None, f"cannot be converted for the peer: {exc}", refused=refused)
    log.debug(
        "%s converted from %s to %s in %.1f ms",
        item.sop_uid,
        item.transfer_syntax,
        target,
        (time.perf_counter() - started) * 1000,
    )
    try:
        sent = _sent(
            item,
            lambda: wire.send_file(assoc, converted, item.sop_class_uid, item.sop_uid, target, **originator),
        )
    finally:
        converted.unlink(missing_ok=True)
    _count_transcoded(assoc, target)
    return Sent(item, sent.status, sent.error, sent.refused, transcoded_to=target)


def _sent(item: Outgoing, send: Callable[[], tuple[int | None, str]]) -> Sent:
    try:
        status, comment = send()
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
    started = time.monotonic()
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
        ending = "released" if assoc.is_established else "aborted"
        if assoc.is_established:
            assoc.release()
        done = sum(1 for s in results if s.ok)
        log.info(
            "association %s to %s: %d of %d accepted%s; %s in %.2fs",
            calling_ae,
            peer,
            done,
            len(results),
            transcoded_note(assoc),
            ending,
            time.monotonic() - started,
        )
    return results


def outgoing(store, instance) -> Outgoing:
    """The :class:`Outgoing` for an index row held in *store* (an ``Instance``, an outbox or send-job row)."""
    return Outgoing(
        path=store.absolute(instance.path),
        sop_class_uid=instance.sop_class_uid,
        sop_uid=instance.sop_uid,
        transfer_syntax=instance.transfer_syntax,
        tmp_dir=store.tmp,
    )
