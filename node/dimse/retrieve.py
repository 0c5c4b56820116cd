"""C-MOVE / C-GET plumbing: the sub-operation loop and the service class that sends its progress.

pynetdicom's own Q/R retrieve SCP only sends data sets it re-encodes, on an
association it opens itself.  The node sends the stored bytes through the one
sending path (:mod:`node.remotes.sender`), so the EVT_C_MOVE / EVT_C_GET
handlers here drive the sub-operations themselves and yield
:class:`Progress`; :class:`RetrieveService` turns each into a C-MOVE-RSP /
C-GET-RSP.  :func:`install` routes the retrieve SOP classes to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO

import pynetdicom.association
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.service_class import QueryRetrieveServiceClass

from ..index.query import QueryError, matching_instances
from ..remotes import direct
from ..remotes.sender import Outgoing, outgoing, store_one
from .identifiers import GET_MODELS, MOVE_MODELS, root_of, to_query
from .storage import error_comment

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCELLED = 0xFE00
SUCCESS = 0x0000
SUBOPS_WARNING = 0xB000  # sub-operations complete, one or more failures or warnings
SUBOPS_ALL_FAILED = 0xA702  # unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MAX_SUBOPERATIONS = 65535  # the counts are US in the responses
PENDING_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Progress:
    """One C-MOVE / C-GET response: pending (with remaining) or final."""

    status: int
    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: tuple[str, ...] = ()
    comment: str = ""

    @property
    def pending(self) -> bool:
        return self.status == PENDING


def refused(status: int, reason: str, *, failed: int = 0) -> Progress:
    """A final failure before (or instead of) any sub-operation, naming the reason."""
    return Progress(status, failed=failed, comment=reason)


@dataclass
class _Tally:
    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def progress(self, status: int, comment: str = "") -> Progress:
        return Progress(
            status,
            self.remaining,
            self.completed,
            self.failed,
            self.warning,
            tuple(self.failed_uids),
            comment,
        )

    def final(self) -> Progress:
        if not self.failed and not self.warning:
            return self.progress(SUCCESS)
        if self.failed == self.total:
            return self.progress(SUBOPS_ALL_FAILED, "no instance could be sent")
        return self.progress(SUBOPS_WARNING, f"{self.failed} of {self.total} instances failed")


def too_many(items: Sequence[Outgoing], what: str) -> Progress | None:
    """A refusal when more instances match than a response can count, else None."""
    if len(items) <= MAX_SUBOPERATIONS:
        return None
    return refused(UNABLE_TO_PROCESS, f"{len(items)} instances match; at most {MAX_SUBOPERATIONS} per {what}")


def suboperations(event, assoc, items: Sequence[Outgoing], *, what: str) -> Iterator[Progress]:
    """C-STORE *items* on *assoc*, yielding pending Progress as they go and then the final one.

    Pending responses are optional (PS3.4 C.4.2.1.5): one goes out after the
    first instance and then at most every PENDING_INTERVAL_S, since encoding
    and sending one per instance costs a good part of a small instance's time.

    A C-CANCEL ends with status Cancel; a lost association counts what was
    not sent as failed.
    """
    tally = _Tally(len(items))
    last_pending = 0.0
    originator = event.assoc.requestor.ae_title
    message_id = event.request.MessageID
    for item in items:
        if event.is_cancelled:
            yield tally.progress(CANCELLED, f"{what} cancelled by the requester")
            return
        if not assoc.is_established:
            break
        sent = store_one(assoc, item, originator_ae=originator, originator_id=message_id)
        if sent.status == SUCCESS:
            tally.completed += 1
        elif sent.ok:
            tally.warning += 1
        else:
            tally.failed += 1
            tally.failed_uids.append(item.sop_uid)
            reason = sent.error or f"status 0x{sent.status:04X}"
            log.warning("%s of %s failed: %s", what, item.sop_uid, reason)
        now = time.monotonic()
        if tally.remaining and now - last_pending >= PENDING_INTERVAL_S:
            last_pending = now
            yield tally.progress(PENDING)
    if tally.remaining:  # the association went away under us
        lost = [item.sop_uid for item in items[len(items) - tally.remaining :]]
        tally.failed += len(lost)
        tally.failed_uids.extend(lost)
    yield tally.final()


class RetrieveService(QueryRetrieveServiceClass):
    """Q/R service class whose C-MOVE / C-GET responses come from the node's handlers."""

    def _move_scp(self, req, context) -> None:
        self._serve(req, context, evt.EVT_C_MOVE, C_MOVE())

    def _get_scp(self, req, context) -> None:
        self._serve(req, context, evt.EVT_C_GET, C_GET())

    def _serve(self, req, context, event_type, rsp) -> None:
        cx_id = context.context_id
        rsp.MessageID = req.MessageID
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        info = {"request": req, "context": context.as_tuple, "_is_cancelled": self.is_cancelled}
        try:
            for progress in evt.trigger(self.assoc, event_type, info):
                if not self.assoc.is_established:
                    return
                self._respond(rsp, progress, context, cx_id)
                if not progress.pending:
                    return
        except Exception as exc:  # a handler bug must still end the request with a status
            log.exception("retrieve handler failed")
            self._node_direct_off()
            if self.assoc.is_established:
                self._respond(rsp, refused(UNABLE_TO_PROCESS, f"retrieve failed: {exc}"), context, cx_id)
            return
        finally:
            self._node_direct_off()
        if self.assoc.is_established:  # the handler ended without a final response
            self._respond(rsp, refused(UNABLE_TO_PROCESS, "retrieve ended unexpectedly"), context, cx_id)

    def _node_direct_off(self) -> None:
        # Direct socket writes (see handle_get) end with the request.
        self.assoc._node_direct = False

    def _respond(self, rsp, progress: Progress, context, cx_id: int) -> None:
        if progress.pending and isinstance(rsp, C_GET) and getattr(self.assoc, "_node_direct", False):
            # The C-STOREs of this C-GET go straight to the socket: so must
            # its pending responses, in order (node.remotes.direct).
            counts = tuple(
                min(n, MAX_SUBOPERATIONS)
                for n in (progress.remaining, progress.completed, progress.failed, progress.warning)
            )
            pdus = direct.get_pending_pdus(
                cx_id, str(rsp.AffectedSOPClassUID), rsp.MessageIDBeingRespondedTo, counts
            )
            self.assoc.dul.socket.send(pdus)
            return
        rsp.Status = progress.status
        rsp.ErrorComment = error_comment(progress.comment) if progress.comment else None
        rsp.Identifier = None
        # Remaining only while sub-operations are under way (PS3.4 C.4.2.1.6).
        keep_remaining = progress.pending or progress.status == CANCELLED
        remaining = min(progress.remaining, MAX_SUBOPERATIONS)
        rsp.NumberOfRemainingSuboperations = remaining if keep_remaining else None
        rsp.NumberOfCompletedSuboperations = min(progress.completed, MAX_SUBOPERATIONS)
        rsp.NumberOfFailedSuboperations = min(progress.failed, MAX_SUBOPERATIONS)
        rsp.NumberOfWarningSuboperations = min(progress.warning, MAX_SUBOPERATIONS)
        if not progress.pending and progress.failed_uids:
            ts = context.transfer_syntax[0]
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = list(progress.failed_uids)
            rsp.Identifier = BytesIO(encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated))
        self.dimse.send_msg(rsp, cx_id)


_RETRIEVE_UIDS = frozenset(str(uid) for uid in (*MOVE_MODELS, *GET_MODELS))


def install() -> None:
    """Route the retrieve SOP classes (C-MOVE / C-GET) to :class:`RetrieveService`.

    pynetdicom picks a service class per SOP class with
    ``uid_to_service_class``; only the six retrieve UIDs are redirected.
    """
    original = pynetdicom.association.uid_to_service_class
    if getattr(original, "node_retrieve", False):
        return

    def dispatch(uid):
        return RetrieveService if str(uid) in _RETRIEVE_UIDS else original(uid)

    dispatch.node_retrieve = True  # type: ignore[attr-defined]
    pynetdicom.association.uid_to_service_class = dispatch


def requested_instances(event, store) -> list[Outgoing]:
    """The stored instances a C-MOVE / C-GET identifier names; QueryError if it cannot be answered."""
    try:
        identifier = event.identifier
    except Exception as exc:  # pydicom raises many types on a broken identifier
        raise QueryError(f"the identifier cannot be decoded: {exc}") from None
    query, _ = to_query(identifier, root_of(event.request.AffectedSOPClassUID), infer_level=True)
    return [outgoing(store, ref) for ref in matching_instances(query)]


def summary(progress: Progress) -> str:
    """The outcome of a retrieve in a log line."""
    text = (
        f"0x{progress.status:04X}: {progress.completed} completed, {progress.failed} failed, "
        f"{progress.warning} warning"
    )
    return f"{text} ({progress.comment})" if progress.comment else text
