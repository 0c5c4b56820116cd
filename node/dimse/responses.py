"""Pending C-FIND responses written straight to the association's socket.

pynetdicom turns each response into a DIMSE message (two pydicom encodings
of the command set), queues its P-DATA PDUs to the DUL thread and wakes it;
with one response per match that hand-off costs more than the query.  Here
the command set is packed by hand, the identifier encoded once, and the PDUs
written by the handler's own thread, in order.  This is safe only while
nothing else writes to the socket: the peer (without asynchronous operations
negotiated) waits for our final response before sending another request, so
the DUL thread has nothing queued; :func:`usable` checks that before a
request starts and the final response still goes through pynetdicom, after.
"""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

C_FIND_RSP = 0x8020
DATASET_PRESENT = 0x0000  # anything but 0x0101 (PS3.7 E.1)
PENDING = 0xFF00


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def command_set(sop_class: str, message_id: int, status: int) -> bytes:
    """The implicit VR little endian command set of a C-FIND-RSP carrying an identifier."""
    body = b"".join(
        [
            _element(0x0002, _uid(sop_class)),
            _element(0x0100, struct.pack("<H", C_FIND_RSP)),
            _element(0x0120, struct.pack("<H", message_id)),
            _element(0x0800, struct.pack("<H", DATASET_PRESENT)),
            _element(0x0900, struct.pack("<H", status)),
        ]
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body


def pdus(context_id: int, command: bytes, dataset: bytes, max_pdu: int) -> bytes:
    """P-DATA-TF PDUs carrying *command* then *dataset*, each PDV within the peer's maximum."""
    size = max_pdu - 6 if max_pdu else max(len(command), len(dataset), 1)
    out = []
    for data, more, last in ((command, 0x01, 0x03), (dataset, 0x00, 0x02)):
        for start in range(0, len(data), size):
            fragment = data[start : start + size]
            flags = last if start + size >= len(data) else more
            pdv = struct.pack(">IBB", len(fragment) + 2, context_id, flags) + fragment
            out.append(struct.pack(">BBI", 0x04, 0x00, len(pdv)) + pdv)
    return b"".join(out)


def usable(assoc) -> bool:
    """True when the handler's thread may write to the socket itself (nothing queued for the DUL)."""
    dul = assoc.dul
    return dul.socket is not None and dul.to_provider_queue.empty()


def send_pending(event, identifier: Dataset) -> None:
    """Write one pending C-FIND response with *identifier* to the requester."""
    context = event.context
    ts = context.transfer_syntax
    data = encode(identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if data is None:
        raise ValueError("the response identifier could not be encoded")
    request = event.request
    command = command_set(str(request.AffectedSOPClassUID), request.MessageID, PENDING)
    assoc = event.assoc
    assoc.dul.socket.send(pdus(context.context_id, command, data, assoc.dimse.maximum_pdu_size))
