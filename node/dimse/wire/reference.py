"""pynetdicom's own encoding of the messages :mod:`.codec` encodes by hand (for the contract tests).

Each function builds the message the pynetdicom way (a DIMSE primitive, its
message class, ``encode_msg`` into P-DATA primitives, each encoded as a
P-DATA-TF PDU) and returns the bytes that would go on the wire.  Nothing in
the node calls this at run time.
"""

from __future__ import annotations

import inspect
from io import BytesIO

from pynetdicom import association, dul, fsm, transport
from pynetdicom.dimse_messages import (
    C_ECHO_RSP,
    C_FIND_RSP,
    C_GET_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
)
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_STORE
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT


def _pdus(message, primitive, context_id: int, max_pdu: int) -> bytes:
    message.primitive_to_message(primitive)
    out = []
    for p_data in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        out.append(pdu.encode())
    return b"".join(out)


def c_store_rq(
    context_id: int,
    sop_class: str,
    sop_instance: str,
    message_id: int,
    dataset: bytes,
    max_pdu: int,
    *,
    originator_ae: str = "",
    originator_id: int | None = None,
) -> bytes:
    rq = C_STORE()
    rq.MessageID = message_id
    rq.AffectedSOPClassUID = sop_class
    rq.AffectedSOPInstanceUID = sop_instance
    rq.Priority = 0
    if originator_ae:
        rq.MoveOriginatorApplicationEntityTitle = originator_ae
    if originator_id is not None:
        rq.MoveOriginatorMessageID = originator_id
    rq.DataSet = BytesIO(dataset)
    return _pdus(C_STORE_RQ(), rq, context_id, max_pdu)


def c_store_rsp(
    context_id: int,
    sop_class: str,
    sop_instance: str,
    message_id: int,
    status: int,
    comment: str,
    max_pdu: int,
) -> bytes:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    return _pdus(C_STORE_RSP(), rsp, context_id, max_pdu)


def c_echo_rsp(context_id: int, sop_class: str, message_id: int, status: int, max_pdu: int) -> bytes:
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = status
    return _pdus(C_ECHO_RSP(), rsp, context_id, max_pdu)


def c_find_rsp_pending(
    context_id: int, sop_class: str, message_id: int, identifier: bytes, max_pdu: int
) -> bytes:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = 0xFF00
    rsp.Identifier = BytesIO(identifier)
    return _pdus(C_FIND_RSP(), rsp, context_id, max_pdu)


def c_get_rsp_pending(
    context_id: int, sop_class: str, message_id: int, counts: tuple[int, int, int, int], max_pdu: int
) -> bytes:
    rsp = C_GET()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = 0xFF00
    (
        rsp.NumberOfRemainingSuboperations,
        rsp.NumberOfCompletedSuboperations,
        rsp.NumberOfFailedSuboperations,
        rsp.NumberOfWarningSuboperations,
    ) = counts
    return _pdus(C_GET_RSP(), rsp, context_id, max_pdu)


def a_abort(source: int, reason: int) -> bytes:
    primitive = A_ABORT()
    primitive.abort_source = source
    pdu = A_ABORT_RQ()
    pdu.from_primitive(primitive)
    pdu.source = source
    pdu.reason_diagnostic = reason
    return pdu.encode()


def call_sites() -> dict[str, bool]:
    """Whether pynetdicom still calls each hooked internal where the wire layer expects it."""
    dul_src = inspect.getsource(dul.DULServiceProvider)
    fsm_src = inspect.getsource(fsm)
    transport_src = inspect.getsource(transport.RequestHandler._create_association)
    assoc_src = inspect.getsource(association.Association)
    return {
        "reader: _is_transport_event calls _read_pdu_data": "self._read_pdu_data()" in dul_src,
        "reader: PDU header is 6 bytes, then the announced length": "self.socket.recv(6)" in dul_src
        and "self.socket.recv(pdu_length)" in dul_src,
        "inbound: DT_2 passes P-DATA to dimse.receive_primitive": "dimse.receive_primitive(" in fsm_src,
        "reactor: DUL loop sleeps time.sleep(self._run_loop_delay)": "time.sleep(self._run_loop_delay)"
        in dul_src,
        "reactor: association loop sleeps time.sleep(0.001)": "time.sleep(0.001)" in assoc_src,
        "reactor: contexts copied with deepcopy(self.server.contexts)": "deepcopy(self.server.contexts)"
        in transport_src,
        "retrieve: service class chosen by uid_to_service_class(class_uid)": "uid_to_service_class(class_uid)"
        in assoc_src,
        "reader: Sta2 starts ARTIM": "dul.artim_timer.start()" in fsm_src,
    }
