"""Every command set and PDU the node encodes by hand, and the parser for received command sets.

pynetdicom builds each message from a primitive, a message object and two
pydicom encodings; for the handful of messages the node sends thousands of
times a minute (C-STORE-RQ/RSP, C-ECHO-RSP, pending C-FIND-RSP and
C-GET-RSP) that costs more than the work they report.  The bytes here are
checked against pynetdicom's own encoder for the same message in
tests/test_wire_contract.py; change nothing here without that test.

Command sets are implicit VR little endian, elements in tag order, with the
group length first (PS3.7 6.3.1, E.1).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ...statuses import (
    C_ECHO_RSP,
    C_FIND_RSP,
    C_GET_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    DATASET_PRESENT,
    NO_DATASET,
    PENDING,
)

# -- command sets ---------------------------------------------------------------

# Command elements (group 0000) the node reads or writes.
AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
RESPONDED_TO = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
DATASET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000
REMAINING = 0x1020
COMPLETED = 0x1021
FAILED = 0x1022
WARNING = 0x1023
MOVE_ORIGINATOR_AE = 0x1030
MOVE_ORIGINATOR_ID = 0x1031

_US = struct.Struct("<H")
_ELEMENT_HEADER = struct.Struct("<HHI")


def us(value: int) -> bytes:
    return _US.pack(value)


def uid(text: str) -> bytes:
    """A UI value: ASCII, padded to even length with NUL."""
    raw = text.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def text(value: str) -> bytes:
    """An AE / LO value: ASCII, padded to even length with a space."""
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def error_comment(reason: str) -> str:
    """*reason* as an ErrorComment: LO, at most 64 characters, no backslash or controls."""
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in reason)
    return cleaned[:64]


def command_set(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """Encode (element number, value) pairs of group 0000, sorted, with the group length."""
    body = b"".join(_ELEMENT_HEADER.pack(0x0000, tag, len(value)) + value for tag, value in sorted(elements))
    return _ELEMENT_HEADER.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


def c_store_rq(
    sop_class: str,
    sop_instance: str,
    message_id: int,
    *,
    priority: int = 0,
    originator_ae: str = "",
    originator_id: int | None = None,
) -> bytes:
    """A C-STORE-RQ command set announcing a data set."""
    elements = [
        (AFFECTED_SOP_CLASS, uid(sop_class)),
        (COMMAND_FIELD, us(C_STORE_RQ)),
        (MESSAGE_ID, us(message_id)),
        (PRIORITY, us(priority)),
        (DATASET_TYPE, us(DATASET_PRESENT)),
        (AFFECTED_SOP_INSTANCE, uid(sop_instance)),
    ]
    if originator_ae:
        elements.append((MOVE_ORIGINATOR_AE, text(originator_ae)))
    if originator_id is not None:
        elements.append((MOVE_ORIGINATOR_ID, us(originator_id)))
    return command_set(elements)


def c_store_rsp(sop_class: str, sop_instance: str, message_id: int, status: int, comment: str = "") -> bytes:
    """A C-STORE-RSP command set (no data set), with an ErrorComment when *comment*."""
    elements = [
        (AFFECTED_SOP_CLASS, uid(sop_class)),
        (COMMAND_FIELD, us(C_STORE_RSP)),
        (RESPONDED_TO, us(message_id)),
        (DATASET_TYPE, us(NO_DATASET)),
        (STATUS, us(status)),
        (AFFECTED_SOP_INSTANCE, uid(sop_instance)),
    ]
    if comment:
        elements.append((ERROR_COMMENT, text(error_comment(comment))))
    return command_set(elements)


def c_echo_rsp(sop_class: str, message_id: int, status: int = 0x0000) -> bytes:
    """A C-ECHO-RSP command set."""
    return command_set(
        [
            (AFFECTED_SOP_CLASS, uid(sop_class)),
            (COMMAND_FIELD, us(C_ECHO_RSP)),
            (RESPONDED_TO, us(message_id)),
            (DATASET_TYPE, us(NO_DATASET)),
            (STATUS, us(status)),
        ]
    )


def c_find_rsp_pending(sop_class: str, message_id: int, status: int = PENDING) -> bytes:
    """A pending C-FIND-RSP command set announcing its identifier."""
    return command_set(
        [
            (AFFECTED_SOP_CLASS, uid(sop_class)),
            (COMMAND_FIELD, us(C_FIND_RSP)),
            (RESPONDED_TO, us(message_id)),
            (DATASET_TYPE, us(DATASET_PRESENT)),
            (STATUS, us(status)),
        ]
    )


def c_get_rsp_pending(sop_class: str, message_id: int, counts: tuple[int, int, int, int]) -> bytes:
    """A pending C-GET-RSP command set: (remaining, completed, failed, warning), no data set."""
    remaining, completed, failed, warning = counts
    return command_set(
        [
            (AFFECTED_SOP_CLASS, uid(sop_class)),
            (COMMAND_FIELD, us(C_GET_RSP)),
            (RESPONDED_TO, us(message_id)),
            (DATASET_TYPE, us(NO_DATASET)),
            (STATUS, us(PENDING)),
            (REMAINING, us(remaining)),
            (COMPLETED, us(completed)),
            (FAILED, us(failed)),
            (WARNING, us(warning)),
        ]
    )


def parse_command(data: bytes) -> dict[int, bytes]:
    """An implicit VR little endian command set as {element number: raw value}.

    Raises ValueError naming the problem when *data* is not one: an element
    outside group 0000, a value running past the end, trailing bytes.
    """
    values: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if offset + 8 > end:
            raise ValueError(f"command set ends inside an element header at byte {offset}")
        group, element, length = _ELEMENT_HEADER.unpack_from(data, offset)
        offset += 8
        if group != 0x0000:
            raise ValueError(f"element ({group:04X},{element:04X}) is not a command element")
        if length > end - offset:
            raise ValueError(f"element (0000,{element:04X}) claims {length} bytes, {end - offset} left")
        values[element] = bytes(data[offset : offset + length])
        offset += length
    return values


def read_us(values: dict[int, bytes], element: int) -> int | None:
    raw = values.get(element)
    return _US.unpack(raw)[0] if raw is not None and len(raw) == 2 else None


def read_uid(values: dict[int, bytes], element: int) -> str:
    return values.get(element, b"").rstrip(b"\0 ").decode("ascii", "replace")


# -- PDUs ---------------------------------------------------------------------

P_DATA_TF = 0x04
A_ABORT = 0x07
_PDU_HEADER = struct.Struct(">BBI")
_PDV_HEADER = struct.Struct(">IBB")

# A-ABORT source / reason (PS3.8 9.3.8)
SOURCE_USER = 0x00
SOURCE_PROVIDER = 0x02
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNIZED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_INVALID_PARAMETER = 0x06


def a_abort(source: int = SOURCE_PROVIDER, reason: int = REASON_NOT_SPECIFIED) -> bytes:
    """An A-ABORT PDU."""
    return _PDU_HEADER.pack(A_ABORT, 0, 4) + bytes([0, 0, source, reason])


def fragment_size(max_pdu: int) -> int:
    """The most data one PDV may carry within the peer's maximum PDU length (0: no limit)."""
    return max_pdu - 6 if max_pdu else 0


def p_data(context_id: int, data: bytes | memoryview, *, command: bool, last: bool) -> bytes:
    """One P-DATA-TF PDU carrying one PDV."""
    flags = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return (
        _PDU_HEADER.pack(P_DATA_TF, 0, len(data) + 6)
        + _PDV_HEADER.pack(len(data) + 2, context_id, flags)
        + data
    )


def fragments(
    context_id: int, data: bytes | memoryview, max_pdu: int, *, command: bool, last: bool = True
) -> bytes:
    """*data* as P-DATA-TF PDUs, each within *max_pdu* (the peer's); the last one flagged *last*.

    With *last* False the data continues in a later call (a data set read
    from a file in blocks): no PDU here carries the last-fragment flag.
    """
    view = memoryview(data)
    if not view:
        return p_data(context_id, b"", command=command, last=True) if last else b""
    size = fragment_size(max_pdu) or len(view)
    out = []
    for start in range(0, len(view), size):
        final = last and start + size >= len(view)
        out.append(p_data(context_id, view[start : start + size], command=command, last=final))
    return b"".join(out)


def message(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> bytes:
    """A whole DIMSE message (command set, then the data set if any) as P-DATA-TF PDUs."""
    out = fragments(context_id, command, max_pdu, command=True)
    if dataset is not None:
        out += fragments(context_id, dataset, max_pdu, command=False)
    return out


READ_BLOCK = 256 * 1024


def dataset_stream(context_id: int, source: BinaryIO, max_pdu: int) -> Iterator[bytes]:
    """The data set read from *source* (to its end) as P-DATA-TF PDUs, a bounded block at a time."""
    size = fragment_size(max_pdu) or READ_BLOCK
    block = max(size, (READ_BLOCK // size) * size)  # whole PDVs per read
    data = source.read(block)
    while data:
        following = source.read(block)
        yield fragments(context_id, data, max_pdu, command=False, last=not following)
        data = following
