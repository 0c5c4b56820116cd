"""C-MOVE / C-GET responses from the node's own handlers, through pynetdicom's service class machinery.

pynetdicom's Query/Retrieve SCP only sends data sets it re-encodes, on an
association it opens itself.  The node sends the stored bytes through its
one sending path, so its EVT_C_MOVE / EVT_C_GET handlers drive the
sub-operations themselves and yield progress objects (status, remaining,
completed, failed, warning, failed_uids, comment; see
``node.dimse.retrieve.Progress``); :class:`RetrieveService` turns each
into a C-MOVE-RSP / C-GET-RSP.  Routing the retrieve SOP classes to it means
replacing ``pynetdicom.association.uid_to_service_class`` (function hook,
installed in both modes: without it C-MOVE and C-GET do not work at all).

The final response carries the Failed SOP Instance UID List as its
identifier when sub-operations failed (PS3.4 C.4.2.1.3.1 / C.4.3.1.3.1),
except for a C-GET requested by DCMTK: its ``DcmSCU::handleCGETSession``
(getscu) reads the final C-GET-RSP's command set but never the data set it
announces, and then fails to release ("DUL P-Data PDU arrived").  The counts
and the ErrorComment still say how many failed; DCMTK's C-MOVE SCU reads
the identifier, so C-MOVE always carries it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO

import pynetdicom.association
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.service_class import QueryRetrieveServiceClass

from ...statuses import CANCELLED, UNABLE_TO_PROCESS
from . import codec, direct

log = logging.getLogger("node.dimse.wire")

MAX_SUBOPERATIONS = 65535  # the counts are US in the responses
# Implementation Class UID root of DCMTK (OFFIS).
DCMTK_ROOT = "1.2.276.0.7230010.3"


@dataclass(frozen=True)
class _Failure:
    status: int
    comment: str
    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: tuple[str, ...] = ()
    pending: bool = False


def _reads_final_get_identifier(assoc) -> bool:
    implementation = str(assoc.requestor.implementation_class_uid or "")
    return not implementation.startswith(DCMTK_ROOT)


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
            direct.end(self.assoc)
            if self.assoc.is_established:
                self._respond(rsp, _Failure(UNABLE_TO_PROCESS, f"retrieve failed: {exc}"), context, cx_id)
            return
        finally:
            # Direct socket writes (fast path, node.dimse.get) end with the request.
            direct.end(self.assoc)
        if self.assoc.is_established:  # the handler ended without a final response
            self._respond(rsp, _Failure(UNABLE_TO_PROCESS, "retrieve ended unexpectedly"), context, cx_id)

    def _respond(self, rsp, progress, context, cx_id: int) -> None:
        counts = tuple(
            min(n, MAX_SUBOPERATIONS)
            for n in (progress.remaining, progress.completed, progress.failed, progress.warning)
        )
        if progress.pending and isinstance(rsp, C_GET) and direct.active(self.assoc):
            # The C-STOREs of this C-GET go straight to the socket: so must
            # its pending responses, in order.
            direct.send_get_pending(
                self.assoc, cx_id, str(rsp.AffectedSOPClassUID), rsp.MessageIDBeingRespondedTo, counts
            )
            return
        rsp.Status = progress.status
        rsp.ErrorComment = codec.error_comment(progress.comment) if progress.comment else None
        rsp.Identifier = None
        # Remaining only while sub-operations are under way (PS3.4 C.4.2.1.6).
        keep_remaining = progress.pending or progress.status == CANCELLED
        rsp.NumberOfRemainingSuboperations = counts[0] if keep_remaining else None
        rsp.NumberOfCompletedSuboperations = counts[1]
        rsp.NumberOfFailedSuboperations = counts[2]
        rsp.NumberOfWarningSuboperations = counts[3]
        identifier = not progress.pending and progress.failed_uids
        if identifier and isinstance(rsp, C_GET) and not _reads_final_get_identifier(self.assoc):
            identifier = False
        if identifier:
            ts = context.transfer_syntax[0]
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = list(progress.failed_uids)
            rsp.Identifier = BytesIO(encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated))
        self.dimse.send_msg(rsp, cx_id)


def install(retrieve_uids: frozenset[str]) -> None:
    """Route *retrieve_uids* (the C-MOVE / C-GET SOP classes) to :class:`RetrieveService`."""
    original = getattr(pynetdicom.association.uid_to_service_class, "node_original", None)
    original = original or pynetdicom.association.uid_to_service_class

    def dispatch(uid):
        return RetrieveService if str(uid) in retrieve_uids else original(uid)

    dispatch.node_original = original  # type: ignore[attr-defined]
    pynetdicom.association.uid_to_service_class = dispatch


def installed() -> bool:
    return hasattr(pynetdicom.association.uid_to_service_class, "node_original")
