"""Reading PDUs off the socket: bounded, timed out, and refused with an A-ABORT when out of bounds.

Safety hook (installed in both modes) on
``pynetdicom.dul.DULServiceProvider._read_pdu_data``.  pynetdicom reads the
6-byte PDU header, then exactly as many bytes as the header announces,
blocking for as long as that takes: ``01 00 FF FF FF FF`` holds a reader
until 4 GiB arrive, and a peer that stops half-way through a PDU holds its
thread (and an association slot) for ever.  Here:

- a PDU longer than the node accepts for its type (:mod:`.limits`: the
  maximum PDU length the node advertised for P-DATA-TF, a fixed cap for the
  others) or of an unknown type is answered with an A-ABORT and the
  connection is closed, before any of its body is read;
- the whole A-ASSOCIATE-RQ must arrive within ``acse_timeout`` of the
  connection opening (pynetdicom's ARTIM timer), every later PDU within
  ``network_timeout`` of its first byte; a peer that stalls is aborted
  (closed, before an association exists).

The fast path changes how a body is read (one ``recv_into`` a buffer of the
PDU's size, TCP_QUICKACK before waiting; pynetdicom's way is 4 KiB reads)
and hands a P-DATA-TF of an established association straight to the DIMSE
provider (:func:`_deliver_p_data`).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider

from . import codec, inbound, limits

log = logging.getLogger("node.dimse.wire")

_NAMES = {
    0x01: "A-ASSOCIATE-RQ",
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}
_HEADER = struct.Struct(">BBI")
_SAFE_CHUNK = 4096  # pynetdicom's own read size
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

# Set by install(): whether bodies are read the fast way.
_fast = False


class _Stalled(Exception):
    def __init__(self, got: int, wanted: int) -> None:
        self.got, self.wanted = got, wanted


def _wait_readable(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        select.select([sock], [], [])
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
        raise _Stalled(0, 0)


# The socket stays blocking (listener.prepare_socket); each read first takes
# what has arrived without waiting, and only waits (up to the deadline) when
# nothing has: one system call per read in the usual case.
_NOWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def _recv(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    try:
        return sock.recv(n, _NOWAIT)
    except BlockingIOError:
        _wait_readable(sock, deadline)
        return sock.recv(n, _NOWAIT)


def _recv_into(sock: socket.socket, view: memoryview, deadline: float | None) -> int:
    try:
        return sock.recv_into(view, len(view), _NOWAIT)
    except BlockingIOError:
        quick_ack(sock)  # the rest may be held by the peer's Nagle algorithm until we ACK
        _wait_readable(sock, deadline)
        return sock.recv_into(view, len(view), _NOWAIT)


def _read_safe(sock: socket.socket, n: int, deadline: float | None) -> bytearray:
    """Up to *n* bytes in pynetdicom's 4 KiB reads (fewer only if the peer closed)."""
    out = bytearray()
    while len(out) < n:
        try:
            chunk = _recv(sock, min(_SAFE_CHUNK, n - len(out)), deadline)
        except _Stalled:
            raise _Stalled(len(out), n) from None
        if not chunk:
            break
        out += chunk
    return out


def _read_fast(sock: socket.socket, n: int, deadline: float | None, header: bytes) -> bytearray:
    """*header* and up to *n* more bytes straight into one buffer (its size is bounded by the caller)."""
    buf = bytearray(len(header) + n)
    buf[: len(header)] = header
    view = memoryview(buf)
    got = len(header)
    try:
        while got < len(buf):
            try:
                k = _recv_into(sock, view[got:], deadline)
            except _Stalled:
                raise _Stalled(got - len(header), n) from None
            if not k:
                break
            got += k
    finally:
        view.release()
    if got < len(buf):
        del buf[got:]
    return buf


def quick_ack(sock: socket.socket) -> None:
    """Acknowledge what was read at once (fast path), before waiting for more.

    A peer with Nagle's algorithm on (Debian's DCMTK without TCP_NODELAY=1)
    holds its next small segment until the last one is acknowledged, and
    DCMTK writes a PDU header and its body separately: without a quick ACK
    whenever the node is about to wait (inside a PDU here, between PDUs in
    the DUL thread's idle wait) every small C-STORE waits for the ~40 ms
    delayed-ACK timer (21 instead of ~200 tiny instances/s).
    """
    if _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass


# An acceptor reads the A-ASSOCIATE-RQ in Sta2, or in Sta1 when it arrives
# before the state machine has taken the connection indication (Evt5).
_BEFORE_ASSOCIATION = ("Sta1", "Sta2")


def _deadline(dul: DULServiceProvider) -> tuple[float | None, str]:
    """When the PDU starting now must be complete, and which setting says so."""
    state = dul.state_machine.current_state
    if state in _BEFORE_ASSOCIATION or state == "Sta13":
        # ARTIM runs (acse_timeout) from the connection opening / the abort.
        return time.monotonic() + max(0.0, dul.artim_timer.remaining), "acse_timeout"
    timeout = dul.assoc.network_timeout
    if state == "Sta5" and dul.assoc.acse_timeout is not None:
        timeout = dul.assoc.acse_timeout
    return (time.monotonic() + timeout if timeout is not None else None), "network_timeout"


def _local_max_pdu(dul: DULServiceProvider) -> int:
    assoc = dul.assoc
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
    return local.maximum_length or 0


def _peer(dul: DULServiceProvider) -> str:
    assoc = dul.assoc
    remote = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    try:
        where = f"{remote.address}:{remote.port}"
    except Exception:  # noqa: BLE001 - address not known yet
        where = "?"
    title = (remote.ae_title or "").strip()
    return f"{title} from {where}" if title and assoc.is_acceptor else (title or where)


def _refuse(dul: DULServiceProvider, why: str, reason: int | None) -> None:
    """Log *why*, send an A-ABORT (unless *reason* is None) and close the connection."""
    before = dul.assoc.is_acceptor and dul.state_machine.current_state in _BEFORE_ASSOCIATION
    what = "connection" if before else "association"
    log.warning("%s %s: %s; %s", what, _peer(dul), why, "closed" if reason is None else "aborted")
    dul.assoc._node_refusal = why
    wrapper = dul.socket
    sock = wrapper.socket if wrapper is not None else None
    if sock is not None and reason is not None:
        try:
            sock.sendall(codec.a_abort(codec.SOURCE_PROVIDER, reason))
        except OSError:
            pass
    if wrapper is not None:
        wrapper.close()  # queues Evt17: the state machine ends the association
    if before:
        # The association thread waits up to acse_timeout for an
        # A-ASSOCIATE-RQ that will not come: None ends that wait now, so the
        # slot is free again (pynetdicom treats it as the ACSE timeout).
        dul.to_user_queue.put(None)


_PDV_LENGTH = struct.Struct(">I")


def _watched(assoc) -> bool:
    """Whether handlers want every PDU or its bytes (then P-DATA takes pynetdicom's way)."""
    watched = getattr(assoc, "_node_watched", None)
    if watched is None:
        watched = bool(assoc.get_handlers(evt.EVT_PDU_RECV) or assoc.get_handlers(evt.EVT_DATA_RECV))
        assoc._node_watched = watched
    return watched


def _deliver_p_data(dul: DULServiceProvider, data: bytearray) -> bool:
    """A P-DATA-TF in Sta6 straight to the DIMSE provider (fast path); False when malformed.

    What pynetdicom's state machine does for it (Evt10 -> DT-2: a P-DATA
    indication to the DIMSE provider), without decoding it into PDU
    objects, copying it twice and queueing it: the presentation data values
    are views of the buffer the PDU was read into.
    """
    view = memoryview(data)
    items = []
    offset, end = 6, len(data)
    while offset < end:
        if offset + 4 > end:
            return False
        (length,) = _PDV_LENGTH.unpack_from(data, offset)
        if length < 2 or offset + 4 + length > end:
            return False
        items.append([data[offset + 4], view[offset + 5 : offset + 4 + length]])
        offset += 4 + length
    if not items:
        return False
    inbound.receive_pdvs(dul.assoc.dimse, items)
    return True


def read_pdu(self: DULServiceProvider) -> None:
    """Replacement of ``DULServiceProvider._read_pdu_data`` (see the module docstring)."""
    wrapper = self.socket
    sock = wrapper.socket if wrapper is not None else None
    if sock is None:
        self.event_queue.put("Evt17")
        return
    deadline, setting = _deadline(self)
    where = "a PDU header"
    try:
        header = _read_safe(sock, 6, deadline)
        if len(header) < 6:
            self.event_queue.put("Evt17")  # the peer closed the connection
            return
        kind, _, length = _HEADER.unpack(header)
        name = _NAMES.get(kind)
        if name is None:
            _refuse(self, f"unknown PDU type 0x{kind:02X}", codec.REASON_UNRECOGNIZED_PDU)
            return
        limit = limits.pdu_limit(kind, _local_max_pdu(self))
        if length > limit:
            _refuse(
                self,
                f"{name} announces {length} bytes, more than the {limit} this node accepts",
                codec.REASON_INVALID_PARAMETER,
            )
            return
        where = f"a {name}"
        if _fast:
            data = _read_fast(sock, length, deadline, header)
        else:
            data = header + _read_safe(sock, length, deadline)
    except _Stalled as exc:
        timeout = self.assoc.acse_timeout if setting == "acse_timeout" else self.assoc.network_timeout
        before = self.assoc.is_acceptor and self.state_machine.current_state in _BEFORE_ASSOCIATION
        if before:
            where = "its A-ASSOCIATE-RQ"
        # Before an association exists the connection is just closed (ARTIM expiry, PS3.8 9.2).
        _refuse(
            self,
            f"peer stalled inside {where} ({exc.got} of {exc.wanted} bytes) for {setting} ({timeout:g} s)",
            None if before else codec.REASON_NOT_SPECIFIED,
        )
        return
    except OSError as exc:
        log.debug("connection %s: %s", _peer(self), exc)
        self.event_queue.put("Evt17")
        return
    if len(data) != 6 + length:
        log.info("association %s: connection closed inside %s", _peer(self), where)
        self.event_queue.put("Evt17")
        return
    if _fast and kind == 0x04 and self.state_machine.current_state == "Sta6" and not _watched(self.assoc):
        if not _deliver_p_data(self, data):
            log.warning("association %s: malformed P-DATA-TF (its PDV items); aborted", _peer(self))
            self.event_queue.put("Evt19")
        return
    try:
        pdu, event = self._decode_pdu(data)
    except Exception as exc:  # noqa: BLE001 - any malformed PDU is the peer's fault
        log.warning("association %s: malformed %s (%s); aborted", _peer(self), name, exc)
        self.event_queue.put("Evt19")  # the state machine answers with an A-ABORT
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


def install(fast: bool) -> None:
    """Put :func:`read_pdu` in place (idempotent); *fast* selects the body read."""
    global _fast
    _fast = fast
    DULServiceProvider._read_pdu_data = read_pdu


def installed() -> bool:
    return DULServiceProvider._read_pdu_data is read_pdu


def fast() -> bool:
    return _fast
