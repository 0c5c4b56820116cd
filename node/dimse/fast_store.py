"""C-STORE without the hand-offs: a received C-STORE-RQ is stored and answered in the DUL thread.

pynetdicom passes every DIMSE message from its DUL thread to the
association thread, through its service class and event machinery, and
encodes the response with pydicom before handing it back to the DUL thread
to send.  For the one message a Storage SCP receives thousands of times a
minute that costs more than storing the instance.  Here, on associations
our server accepted, the DIMSE provider's ``receive_primitive`` recognises a
C-STORE-RQ by its command set, spools the data set fragments straight into a
Part-10 file in the store's temp folder, runs the ingest path and writes the
C-STORE-RSP PDU to the socket itself.  Every other message (C-ECHO, C-FIND,
C-MOVE, C-GET, responses to our own requests) is handed to pynetdicom's own
code unchanged.  The response is still sent only after the ingest path has
made the instance durable.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from ..part10 import header_bytes
from ..statuses import OUT_OF_RESOURCES

log = logging.getLogger(__name__)

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATASET = 0x0101

# (store function) -> (status, error comment); given the spooled file and the association.
StoreFunc = Callable[[object, Path], tuple[int, str]]


@dataclass
class _Incoming:
    """A C-STORE-RQ being received."""

    context_id: int
    message_id: int
    sop_class: str
    sop_instance: str
    path: Path
    file: BinaryIO


@dataclass
class _State:
    store: StoreFunc
    temp_path: Callable[[], Path]
    command: bytearray = field(default_factory=bytearray)
    incoming: _Incoming | None = None
    passing: bool = False  # the current message belongs to pynetdicom


def parse_command(data: bytes) -> dict[int, bytes]:
    """Decode an implicit VR little endian command set into {element number: raw value}."""
    values: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset + 8 <= end:
        group, element, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        if group == 0x0000:
            values[element] = bytes(data[offset : offset + length])
        offset += length
    return values


def _uid(raw: bytes) -> str:
    return raw.rstrip(b"\0 ").decode("ascii", "replace")


def _us(raw: bytes | None) -> int | None:
    return struct.unpack("<H", raw[:2])[0] if raw and len(raw) >= 2 else None


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii", "replace")
    return raw + pad if len(raw) % 2 else raw


def store_response_pdu(
    context_id: int, message_id: int, sop_class: str, sop_instance: str, status: int, comment: str = ""
) -> bytes:
    """The P-DATA-TF PDU carrying a C-STORE-RSP (command set only)."""
    body = b"".join(
        [
            _element(0x0002, _padded(sop_class, b"\0")),
            _element(0x0100, struct.pack("<H", C_STORE_RSP)),
            _element(0x0120, struct.pack("<H", message_id)),
            _element(0x0800, struct.pack("<H", NO_DATASET)),
            _element(0x0900, struct.pack("<H", status)),
            *([_element(0x0902, _padded(comment, b" "))] if comment else []),
            _element(0x1000, _padded(sop_instance, b"\0")),
        ]
    )
    command = _element(0x0000, struct.pack("<I", len(body))) + body
    pdv = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBI", 0x04, 0x00, len(pdv)) + pdv


def _start(provider: DIMSEServiceProvider, state: _State, context_id: int, command: dict[int, bytes]):
    assoc = provider.assoc
    cx = assoc._accepted_cx.get(context_id)
    if cx is None or not cx.transfer_syntax:
        return None
    sop_class = _uid(command.get(0x0002, b""))
    sop_instance = _uid(command.get(0x1000, b""))
    path = state.temp_path()
    fh = path.open("wb")
    fh.write(header_bytes(sop_class, sop_instance, cx.transfer_syntax[0], assoc.requestor.ae_title))
    return _Incoming(context_id, _us(command.get(0x0110)) or 0, sop_class, sop_instance, path, fh)


def _finish(provider: DIMSEServiceProvider, state: _State) -> None:
    incoming, state.incoming = state.incoming, None
    assert incoming is not None
    try:
        incoming.file.close()
        status, comment = state.store(provider.assoc, incoming.path)
    except Exception as exc:  # noqa: BLE001 - answer the peer whatever happened
        log.exception("C-STORE of %s failed", incoming.sop_instance)
        incoming.path.unlink(missing_ok=True)
        status, comment = OUT_OF_RESOURCES, f"could not store: {exc}"[:64]
    pdu = store_response_pdu(
        incoming.context_id, incoming.message_id, incoming.sop_class, incoming.sop_instance, status, comment
    )
    provider.dul.socket.send(pdu)


_original_receive = DIMSEServiceProvider.receive_primitive


def _receive_primitive(self: DIMSEServiceProvider, primitive: P_DATA) -> None:
    state: _State | None = getattr(self.assoc, "_node_fast_store", None)
    if state is None:
        _original_receive(self, primitive)
        return
    for context_id, data in primitive.presentation_data_value_list:
        header = data[0]
        if state.passing:
            _pass_on(self, state, context_id, data)
        elif header & 1:  # command fragment
            state.command += data[1:]
            if header & 2:
                _command_complete(self, state, context_id)
        elif state.incoming is not None:  # data set fragment of our C-STORE
            state.incoming.file.write(memoryview(data)[1:])
            if header & 2:
                _finish(self, state)
        else:  # data set without a command we took: let pynetdicom judge it
            _pass_on(self, state, context_id, data)


def _command_complete(provider: DIMSEServiceProvider, state: _State, context_id: int) -> None:
    raw, state.command = bytes(state.command), bytearray()
    command = parse_command(raw)
    if _us(command.get(0x0100)) == C_STORE_RQ and _us(command.get(0x0800)) != NO_DATASET:
        state.incoming = _start(provider, state, context_id, command)
        if state.incoming is not None:
            return
    # Not ours: give pynetdicom the whole command as one final fragment.
    state.passing = True
    _pass_on(provider, state, context_id, bytes([0x03]) + raw)


def _pass_on(provider: DIMSEServiceProvider, state: _State, context_id: int, data: bytes) -> None:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, data]]
    _original_receive(provider, primitive)
    if provider.message is None:  # pynetdicom finished that message
        state.passing = False


def enable(assoc, store: StoreFunc, temp_path: Callable[[], Path]) -> None:
    """Take C-STORE-RQs of *assoc* (an association our server accepted) on the fast path."""
    assoc._node_fast_store = _State(store=store, temp_path=temp_path)


def discard(assoc) -> None:
    """Drop a half-received instance when the association ends mid-transfer."""
    state: _State | None = getattr(assoc, "_node_fast_store", None)
    if state is not None and state.incoming is not None:
        incoming, state.incoming = state.incoming, None
        incoming.file.close()
        incoming.path.unlink(missing_ok=True)


def install() -> None:
    """Route pynetdicom's P-DATA handling through this module (idempotent)."""
    DIMSEServiceProvider.receive_primitive = _receive_primitive
