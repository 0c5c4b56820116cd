"""A DICOM peer on a raw socket, for the hostile cases: every byte is chosen by the test.

Well-formed PDUs are packed here by hand (PS3.8 9.3) so that a test can also
bend them: lie about a length, stop half-way, send a command set that is not
one.  Nothing here comes from pynetdicom, so a bug there cannot hide one in
the node.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.7433.99"


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def pdu(kind: int, body: bytes) -> bytes:
    """A PDU: type, reserved byte, 4-byte big-endian length, body."""
    return struct.pack(">BBI", kind, 0, len(body)) + body


def associate_rq(
    called: str,
    calling: str = "RAWSCU",
    contexts: tuple[tuple[str, tuple[str, ...]], ...] = ((VERIFICATION, (IMPLICIT_VR_LE,)),),
    max_pdu: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing *contexts* (abstract syntax, transfer syntaxes), ids 1, 3, 5..."""
    items = [_item(0x10, APPLICATION_CONTEXT.encode())]
    for i, (abstract, syntaxes) in enumerate(contexts):
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        items.append(_item(0x20, struct.pack(">BBBB", 2 * i + 1, 0, 0, 0) + sub))
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, IMPLEMENTATION_UID.encode())
    items.append(_item(0x50, user))
    head = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
    return pdu(0x01, head + b"".join(items))


def element(tag_element: int, value: bytes) -> bytes:
    """One command-group element, implicit VR little endian."""
    return struct.pack("<HHI", 0x0000, tag_element, len(value)) + value


def command_set(*elements: bytes, group_length: bool = True) -> bytes:
    body = b"".join(elements)
    return (element(0x0000, struct.pack("<I", len(body))) if group_length else b"") + body


def echo_rq(message_id: int = 1) -> bytes:
    return command_set(
        element(0x0002, _uid(VERIFICATION)),
        element(0x0100, struct.pack("<H", 0x0030)),
        element(0x0110, struct.pack("<H", message_id)),
        element(0x0800, struct.pack("<H", 0x0101)),
    )


def store_rq(sop_uid: str, message_id: int = 1, sop_class: str = CT_IMAGE_STORAGE) -> bytes:
    return command_set(
        element(0x0002, _uid(sop_class)),
        element(0x0100, struct.pack("<H", 0x0001)),
        element(0x0110, struct.pack("<H", message_id)),
        element(0x0700, struct.pack("<H", 0)),
        element(0x0800, struct.pack("<H", 0x0000)),
        element(0x1000, _uid(sop_uid)),
    )


def p_data(context_id: int, flags: int, data: bytes) -> bytes:
    """A P-DATA-TF with one PDV (flags: bit 0 command, bit 1 last fragment)."""
    return pdu(0x04, struct.pack(">IBB", len(data) + 2, context_id, flags) + data)


RELEASE_RQ = pdu(0x05, bytes(4))


@dataclass
class Reply:
    """A PDU the node sent: its type and body (the 6-byte header stripped)."""

    kind: int
    body: bytes

    @property
    def status(self) -> int | None:
        """The Status (0000,0900) of a P-DATA-TF carrying a whole command set, else None."""
        if self.kind != 0x04:
            return None
        values = command_values(self.body[6:])
        raw = values.get(0x0900)
        return struct.unpack("<H", raw)[0] if raw else None

    @property
    def comment(self) -> str:
        raw = command_values(self.body[6:]).get(0x0902, b"") if self.kind == 0x04 else b""
        return raw.decode("ascii", "replace").strip()


def command_values(data: bytes) -> dict[int, bytes]:
    values, offset = {}, 0
    while offset + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        if group == 0:
            values[elem] = data[offset : offset + length]
        offset += length
    return values


class RawPeer:
    """One TCP connection to the node, driven byte by byte."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened = time.monotonic()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed by the node")
            out += chunk
        return bytes(out)

    def read(self) -> Reply:
        kind, _, length = struct.unpack(">BBI", self._exact(6))
        return Reply(kind, self._exact(length))

    def associate(self, called: str, **kw) -> Reply:
        self.send(associate_rq(called, **kw))
        return self.read()

    def closed_within(self, seconds: float) -> float | None:
        """Seconds until the node closed the connection (reading and dropping what it sends), or None."""
        deadline = time.monotonic() + seconds
        start = time.monotonic()
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except ConnectionError:
                return time.monotonic() - start
            if not chunk:
                return time.monotonic() - start
        return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
