"""DIMSE messages written straight to the association's socket by the thread that has them (fast path).

pynetdicom turns each outgoing message into a primitive, encodes its command
set twice with pydicom, and queues every P-DATA PDU to the DUL thread (32
PDUs for a 512 KB instance at a 16 KB PDU).  Here the command set comes from
:mod:`.codec` and the PDUs are written by the calling thread, in order:

- C-STORE of a stored file (C-MOVE, C-GET, forwarding): the data set is
  read from the file, after its file meta, in bounded blocks;
- pending C-FIND responses (one per match);
- pending C-GET responses between the C-STOREs of a C-GET.

This is safe only while nothing else writes to that socket: an association
opened to send (the peer only answers), or the requester's association
during its own C-FIND or C-GET (without asynchronous operations the peer
waits for our final response before sending another request, so the DUL
thread has nothing queued).  :func:`usable` checks that before a request
starts; the final response of a C-FIND or C-GET still goes through
pynetdicom, after.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from ...statuses import PENDING
from . import codec


class NotDirect(Exception):
    """This file or association cannot take the direct path; use pynetdicom's."""


def usable(assoc) -> bool:
    """True when a handler's thread may write to the socket itself (nothing queued for the DUL)."""
    dul = assoc.dul
    return dul.socket is not None and dul.to_provider_queue.empty()


def begin(assoc) -> bool:
    """Let the current request of *assoc* write directly (if :func:`usable`); returns whether it may."""
    assoc._node_direct = usable(assoc)
    return assoc._node_direct


def end(assoc) -> None:
    assoc._node_direct = False


def active(assoc) -> bool:
    return getattr(assoc, "_node_direct", False)


def _send(assoc, data: bytes) -> None:
    sock = assoc.dul.socket
    if sock is None or sock.socket is None:
        raise OSError("the connection is closed")
    sock.socket.sendall(data)


def dataset_offset(path: Path) -> int:
    """Where the data set starts in a Part-10 file with a file meta group length."""
    with path.open("rb") as fh:
        head = fh.read(144)
    # (0002,0000) UL, explicit VR little endian, right after the preamble and "DICM".
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        raise NotDirect(f"{path.name}: no file meta group length")
    (meta_length,) = struct.unpack("<I", head[140:144])
    return 144 + meta_length


def send_file(
    assoc,
    path: Path,
    sop_class: str,
    sop_uid: str,
    transfer_syntax: str,
    *,
    message_id: int = 1,
    originator_ae: str = "",
    originator_id: int | None = None,
):
    """C-STORE the data set of the file at *path* as stored; return the response (None: none came)."""
    try:
        context_id = assoc._get_valid_context(sop_class, transfer_syntax, "scu").context_id
    except ValueError as exc:
        raise NotDirect(str(exc)) from None
    offset = dataset_offset(path)
    command = codec.c_store_rq(
        sop_class, sop_uid, message_id, originator_ae=originator_ae, originator_id=originator_id
    )
    max_pdu = assoc.dimse.maximum_pdu_size
    with path.open("rb") as fh:
        fh.seek(offset)
        _send(assoc, codec.fragments(context_id, command, max_pdu, command=True))
        for pdus in codec.dataset_stream(context_id, fh, max_pdu):
            _send(assoc, pdus)
    _cx, rsp = assoc.dimse.get_msg(block=True)
    return rsp


def send_find_pending(event, identifier: Dataset) -> None:
    """Write one pending C-FIND response carrying *identifier* to the requester."""
    context = event.context
    ts = context.transfer_syntax
    data = encode(identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if data is None:
        raise ValueError("the response identifier could not be encoded")
    request = event.request
    command = codec.c_find_rsp_pending(str(request.AffectedSOPClassUID), request.MessageID, PENDING)
    assoc = event.assoc
    _send(assoc, codec.message(context.context_id, command, data, assoc.dimse.maximum_pdu_size))


def send_get_pending(assoc, context_id: int, sop_class: str, message_id: int, counts) -> None:
    """Write a pending C-GET-RSP: *counts* = (remaining, completed, failed, warning)."""
    command = codec.c_get_rsp_pending(sop_class, message_id, counts)
    _send(assoc, codec.message(context_id, command, None, assoc.dimse.maximum_pdu_size))
