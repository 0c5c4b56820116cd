"""The node's DICOM listener and the set-up of every association's socket.

- Listen backlog :data:`BACKLOG` (pynetdicom's socketserver default is 5:
  of 200 simultaneous association requests 72 got no answer at all).
- Every association's socket gets TCP_NODELAY (a command PDU followed by a
  data PDU would otherwise wait for the peer's delayed ACK) and a timeout of
  ``network_timeout`` for sends, so that a peer that stops reading cannot
  hold a thread for ever; reads are bounded by :mod:`.reader`.
- A worker process (node/workers/) serves on a listening socket the
  supervisor bound and handed down (:func:`serve` with *sock*): several
  processes accept from one socket, so it is non-blocking (a connection
  another worker took must not stall this one's accept loop) and closing it
  never shuts it down for the others.
- Each association the node accepts carries the node's receiver (what to do
  with a C-STORE, a C-ECHO, a data set that could not be written) and, with
  the fast path on, its fast handlers and wake-up event.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from . import fast_store, inbound, negotiation, reactor, reader, retrieve_service

BACKLOG = 128


def prepare_socket(assoc) -> None:
    """TCP_NODELAY and kernel send / receive timeouts of ``network_timeout`` on *assoc*'s socket.

    The socket stays blocking for Python (no ``settimeout``: that would add
    a poll() before every read and write); SO_SNDTIMEO makes a send to a
    peer that stopped reading fail after ``network_timeout``, and reads are
    bounded by :mod:`.reader`, SO_RCVTIMEO being only a backstop.
    """
    wrapper = assoc.dul.socket
    sock = wrapper.socket if wrapper is not None else None
    if sock is None:
        return
    try:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        timeout = assoc.network_timeout
        if timeout is not None:
            seconds = int(timeout)
            value = struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    except OSError:
        pass


def share_transfer_syntaxes(ae: AE) -> None:
    """Make the supported contexts of *ae* share one UID object per transfer syntax.

    pynetdicom deep-copies the supported contexts for every connection,
    before reading a byte of it: ~170 storage classes x 45 transfer syntaxes
    are 7,650 UID objects, ~350 ms of CPU per connection on a busy machine (a
    port scan becomes a denial of service).  deepcopy copies a shared object
    once, so with shared UIDs the same copy costs ~20 ms.  Safety, both modes.
    """
    shared: dict[str, object] = {}
    for cx in ae.supported_contexts:
        cx._transfer_syntax = [shared.setdefault(str(ts), ts) for ts in cx._transfer_syntax]


def _on_open(event, receiver: inbound.Receiver, temp_path: Callable[[], Path]) -> None:
    assoc = event.assoc
    prepare_socket(assoc)
    assoc._node_receiver = receiver
    if reader.fast():
        fast_store.enable(assoc, receiver, temp_path)
        reactor.wake_on_messages(assoc)
        reactor.start_dul_first(assoc)


def _on_close(event) -> None:
    inbound.discard(event.assoc)


def serve(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: Iterable,
    *,
    receiver: inbound.Receiver,
    temp_path: Callable[[], Path],
    retrieve_uids: Iterable[str],
    stored_syntaxes: negotiation.StoredOf | None = None,
    sock: socket.socket | None = None,
):
    """Start *ae* listening on *address* (or the bound *sock*), non-blocking; returns the server.

    *stored_syntaxes(sop_class)*: the transfer syntaxes the node stores a SOP
    class in (or None), for the storage contexts of C-GET requesters.
    """
    retrieve_service.install(frozenset(str(uid) for uid in retrieve_uids))
    negotiation.install(stored_syntaxes)
    handlers = [
        (evt.EVT_CONN_OPEN, _on_open, [receiver, temp_path]),
        (evt.EVT_CONN_CLOSE, _on_close),
        *evt_handlers,
    ]
    share_transfer_syntaxes(ae)
    if sock is None:
        server = ae.start_server(address, block=False, evt_handlers=handlers)
    else:
        server = _serve_on(ae, sock, handlers)
    server.socket.listen(BACKLOG)
    if reader.fast():
        reactor.tune_server(server)
    return server


def _serve_on(ae: AE, sock: socket.socket, handlers: list):
    """``ae.start_server(block=False)`` on a socket bound by another process (the supervisor)."""

    class SharedSocketServer(ThreadedAssociationServer):
        def server_bind(self) -> None:
            self.socket.close()  # the one socketserver made: serve on the inherited one
            self.socket = sock
            sock.setblocking(False)
            self.server_address = sock.getsockname()

        def server_close(self) -> None:
            # No shutdown(): on a shared socket it would stop every worker's accept.
            self.socket.close()

    server = ae.make_server(
        sock.getsockname(), evt_handlers=handlers, server_class=SharedSocketServer
    )
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{stamp}", daemon=True)
    thread.start()
    ae._servers.append(server)
    return server
