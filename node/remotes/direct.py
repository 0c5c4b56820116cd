"""C-STORE of a stored file written straight to the association's socket.

pynetdicom's ``send_c_store`` of a file encodes the command set twice with
pydicom, parses the file meta with pydicom, and hands every P-DATA PDU
(32 of them for a 512 KB instance at a 16 KB PDU) to the DUL thread through a
queue.  Here the command set is packed by hand, the data set is read from
the file (after its file meta) in bounded blocks and written as PDUs by the
calling thread, and the response is taken from pynetdicom's DIMSE queue as
usual.  Callers use it only while nothing else writes to that socket: an
association opened to send (C-MOVE, forwarding) or the requester's own
association during its C-GET (whose pending responses then go the same way).
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..dimse.responses import pdus

C_STORE_RQ = 0x0001
C_GET_RSP = 0x8010
NO_DATASET = 0x0101
DATASET_PRESENT = 0x0000
READ_BLOCK = 256 * 1024


class NotDirect(Exception):
    """This file or association cannot take the direct path; use pynetdicom's."""


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _command(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(_element(tag, value) for tag, value in sorted(elements))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def dataset_offset(path: Path) -> int:
    """Where the data set starts in a Part-10 file with a file meta group length."""
    with path.open("rb") as fh:
        head = fh.read(144)
    # (0002,0000) UL, explicit VR little endian, right after the preamble and "DICM".
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        raise NotDirect(f"{path.name}: no file meta group length")
    (meta_length,) = struct.unpack("<I", head[140:144])
    return 144 + meta_length


def _context_id(assoc, sop_class: str, transfer_syntax: str) -> int:
    try:
        return assoc._get_valid_context(sop_class, transfer_syntax, "scu").context_id
    except ValueError as exc:
        raise NotDirect(str(exc)) from None


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
) -> int | None:
    """C-STORE the data set of the file at *path* as stored; return the response status (None: none)."""
    context_id = _context_id(assoc, sop_class, transfer_syntax)
    offset = dataset_offset(path)
    elements = [
        (0x0002, _padded(sop_class, b"\0")),
        (0x0100, struct.pack("<H", C_STORE_RQ)),
        (0x0110, struct.pack("<H", message_id)),
        (0x0700, struct.pack("<H", 0)),  # priority medium
        (0x0800, struct.pack("<H", DATASET_PRESENT)),
        (0x1000, _padded(sop_uid, b"\0")),
    ]
    if originator_ae:
        elements.append((0x1030, _padded(originator_ae, b" ")))
    if originator_id is not None:
        elements.append((0x1031, struct.pack("<H", originator_id)))
    max_pdu = assoc.dimse.maximum_pdu_size
    sock = assoc.dul.socket
    size = max_pdu - 6 if max_pdu else READ_BLOCK
    block = max(size, (READ_BLOCK // size) * size)  # whole PDVs per read
    with path.open("rb") as fh:
        fh.seek(offset)
        sock.send(pdus(context_id, _command(elements), b"", max_pdu))
        data = fh.read(block)
        while data:
            following = fh.read(block)
            sock.send(_dataset_pdus(context_id, data, size, last=not following))
            data = following
    _cx, rsp = assoc.dimse.get_msg(block=True)
    status = getattr(rsp, "Status", None)
    return int(status) if status is not None else None


def _dataset_pdus(context_id: int, data: bytes, size: int, *, last: bool) -> bytes:
    out = []
    for start in range(0, len(data), size):
        fragment = data[start : start + size]
        final = last and start + size >= len(data)
        pdv = struct.pack(">IBB", len(fragment) + 2, context_id, 0x02 if final else 0x00) + fragment
        out.append(struct.pack(">BBI", 0x04, 0x00, len(pdv)) + pdv)
    return b"".join(out)


def get_pending_pdus(
    context_id: int, sop_class: str, message_id: int, counts: tuple[int, int, int, int]
) -> bytes:
    """A pending C-GET-RSP (remaining, completed, failed, warning) as PDU bytes."""
    remaining, completed, failed, warning = counts
    command = _command(
        [
            (0x0002, _padded(sop_class, b"\0")),
            (0x0100, struct.pack("<H", C_GET_RSP)),
            (0x0120, struct.pack("<H", message_id)),
            (0x0800, struct.pack("<H", NO_DATASET)),
            (0x0900, struct.pack("<H", 0xFF00)),
            (0x1020, struct.pack("<H", remaining)),
            (0x1021, struct.pack("<H", completed)),
            (0x1022, struct.pack("<H", failed)),
            (0x1023, struct.pack("<H", warning)),
        ]
    )
    return pdus(context_id, command, b"", 0)
