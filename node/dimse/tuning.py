"""pynetdicom, tuned for throughput; applied once when the DIMSE side is imported.

Each change is measured (bench/ingest.py) and keeps pynetdicom's behaviour:

- Reading a PDU: pynetdicom reads in 4 KiB ``recv`` calls joined in Python;
  one ``recv_into`` a buffer of the PDU's size does the same work in a few
  system calls (a 1 MiB PDU was 256 Python iterations).
- TCP_QUICKACK after every read: a peer that leaves Nagle's algorithm on
  (Debian's DCMTK without TCP_NODELAY=1) holds its next small segment until
  we acknowledge the last one; without quick ACKs every small C-STORE waits
  for the ~40 ms delayed-ACK timer.
- Waiting instead of polling: pynetdicom's two threads per association
  poll with 1 ms sleeps (the DUL thread for socket data and PDUs to send,
  the association thread for decoded DIMSE messages), adding up to a
  millisecond at each of the three hand-offs of every C-STORE.  Inside those
  threads ``time.sleep`` is replaced by a wait that ends as soon as there is
  work: socket readable or a PDU queued to send (DUL), a message decoded
  (association).  The timeouts keep every other check as frequent as before.
- pydicom value validation off: every command set pynetdicom builds and
  every header value we read went through pydicom's per-value regex checks
  (a warning at most, by default) - a fifth of the CPU of a small C-STORE.
  The node stores data as received and validates what it relies on itself.
- Copying the supported presentation contexts for each new association:
  pynetdicom deep-copies ~170 contexts x 45 transfer syntaxes (~65 ms per
  association, paid by every findscu/storescu call); a shallow copy of each
  context with its own transfer-syntax list is what negotiation needs.
"""

from __future__ import annotations

import copy
import select
import socket
import threading
import time

from pydicom import config as pydicom_config
from pynetdicom import association, dul, transport
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.presentation import PresentationContext

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _recv(self: transport.AssociationSocket, nr_bytes: int) -> bytearray:
    """Read exactly *nr_bytes* (fewer only if the peer closed the connection)."""
    sock = self.socket
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    while got < nr_bytes:
        n = sock.recv_into(view[got:], nr_bytes - got)
        if not n:
            del view
            del buf[got:]
            return buf
        got += n
    if _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass
    return buf


def _copy_contexts(contexts: list[PresentationContext]) -> list[PresentationContext]:
    """Per-association copy of the supported contexts (see module docstring)."""
    copies = []
    for cx in contexts:
        dup = copy.copy(cx)
        dup._transfer_syntax = list(cx._transfer_syntax)
        copies.append(dup)
    return copies


# How long an idle reactor may wait before re-running its other checks
# (timers, release/abort requests); pynetdicom polls every 1 ms.
_DUL_IDLE_WAIT_S = 0.02
_ASSOC_IDLE_WAIT_S = 0.005


def _dul_wait(provider: DULServiceProvider, seconds: float) -> None:
    """Block until the socket has data or a PDU is queued to send (or the wait ends)."""
    wake = getattr(provider, "_node_wake", None)
    sock = provider.socket.socket if provider.socket is not None else None
    if wake is None or sock is None or sock.fileno() < 0:
        time.sleep(seconds)
        return
    if not provider.to_provider_queue.empty():
        return
    try:
        ready, _, _ = select.select([sock, wake[0]], [], [], _DUL_IDLE_WAIT_S)
    except (OSError, ValueError):
        time.sleep(seconds)
        return
    if wake[0] in ready:
        try:
            wake[0].recv(4096)
        except OSError:
            pass


def _assoc_wait(assoc: Association) -> None:
    """Block until a decoded DIMSE message is queued for this association (or the wait ends)."""
    if getattr(assoc, "_node_send_only", False):
        # The DIMSE queue of an association we opened to send belongs to the
        # sending thread (node.remotes.sender): sleep rather than compete with
        # it for the queue's wake-ups (each one costs the sender a thread switch).
        time.sleep(_ASSOC_IDLE_WAIT_S)
        return
    q = assoc.dimse.msg_queue
    with q.not_empty:
        if not q._qsize():
            q.not_empty.wait(_ASSOC_IDLE_WAIT_S)
        if q._qsize():
            # put() wakes one waiter: if it woke this reactor while a sender
            # thread is blocked in get() on the same queue (send_c_store on an
            # association we requested), pass the wake-up on, or that sender
            # sleeps until the DIMSE timeout.
            q.not_empty.notify()


class _Clock:
    """Stands in for ``time`` inside pynetdicom's dul and association modules."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        thread = threading.current_thread()
        if isinstance(thread, DULServiceProvider) and seconds <= 0.001:
            _dul_wait(thread, seconds)
        elif isinstance(thread, Association) and seconds == 0.001:
            _assoc_wait(thread)
        else:
            time.sleep(seconds)


_original_run_reactor = DULServiceProvider.run_reactor
_original_send_pdu = DULServiceProvider.send_pdu


def _run_reactor(self: DULServiceProvider) -> None:
    self._node_wake = socket.socketpair()
    for end in self._node_wake:
        end.setblocking(False)
    try:
        _original_run_reactor(self)
    finally:
        wake, self._node_wake = self._node_wake, None
        for end in wake:
            end.close()


def _send_pdu(self: DULServiceProvider, primitive) -> None:
    _original_send_pdu(self, primitive)
    wake = getattr(self, "_node_wake", None)
    if wake is not None:
        try:
            wake[1].send(b"\0")
        except OSError:
            pass  # buffer full (already awake) or closing


_applied = False


def apply() -> None:
    """Install the tuned functions into pynetdicom (idempotent)."""
    global _applied
    if _applied:
        return
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    transport.AssociationSocket.recv = _recv
    # transport.py uses ``deepcopy`` only to copy the supported contexts per association.
    transport.deepcopy = _copy_contexts
    DULServiceProvider.run_reactor = _run_reactor
    DULServiceProvider.send_pdu = _send_pdu
    dul.time = _Clock()
    association.time = _Clock()
    _applied = True
