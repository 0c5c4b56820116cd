"""pynetdicom's two threads per association, waiting instead of polling (fast path).

Each change is measured (bench/ingest.py, bench/query.py) and keeps
pynetdicom's behaviour:

- pynetdicom's DUL thread and association thread poll with 1 ms sleeps
  (the DUL thread for socket data and PDUs to send, the association thread
  for decoded DIMSE messages and ACSE primitives), adding up to a
  millisecond at each hand-off, and 5 ms on an A-RELEASE-RQ.  Inside those
  threads ``time.sleep`` is replaced by a wait that ends as soon as there is
  work: the socket readable, a PDU queued to send or the thread asked to
  stop (DUL); a DIMSE message or an ACSE primitive queued (association).
  The idle waits are short, so every other check (timers, kill flags) runs
  as before.
- Per-association copy of the supported presentation contexts: pynetdicom
  deep-copies ~170 contexts x 45 transfer syntaxes for every association
  (~65 ms before this change); negotiation only reads them, so the
  association gets its own list of the same (never modified) contexts.
- The server's ``service_actions`` runs a full ``gc.collect()`` every 60
  connections (a pause of every thread while it runs); Python's own cyclic
  collector already frees dead associations.  Each connection is set up in
  the accepting thread, as pynetdicom's non-threaded server does, instead of
  a new thread that only starts the association's own threads.
- An accepted connection's DUL thread starts at once, before (not after)
  its association thread.
- Associations opened only to send (C-MOVE, forwarding): their own
  association thread never takes a message off their DIMSE queue, and
  ``send_c_store`` does not wait for it to pause (see
  :func:`keep_responses_for_sender`).
"""

from __future__ import annotations

import copy
import queue
import select
import socket
import threading
import time
import types

from pynetdicom import association, dul, transport
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationServer

from . import reader

# How long an idle reactor waits before re-running its other checks
# (timers, release/abort requests, kill flags); pynetdicom polls every 1 ms.
DUL_IDLE_WAIT_S = 0.02
ASSOC_IDLE_WAIT_S = 0.02
SEND_ONLY_WAIT_S = 0.005


class _WakingQueue(queue.Queue):
    """A queue that also sets its association's wake-up event on every put."""

    _wake: threading.Event

    def _put(self, item) -> None:
        super()._put(item)
        self._wake.set()


def wake_on_messages(assoc: Association) -> None:
    """Let the association thread of *assoc* (not started yet) sleep until a message or primitive comes."""
    wake = threading.Event()
    assoc._node_wake = wake
    # The queues pynetdicom made become waking ones in place (new ones would
    # cost six more Condition objects per association).
    for q in (assoc.dimse.msg_queue, assoc.dul.to_user_queue):
        q.__class__ = _WakingQueue
        q._wake = wake


def start_dul_first(assoc: Association) -> None:
    """Start the DUL thread of *assoc* (an acceptor not started yet) now, from the accepting thread.

    pynetdicom's association thread starts it and waits until it runs: two
    thread start-ups in a row before the A-ASSOCIATE-RQ that is already in
    the socket is read.  Started here, the DUL reads it while the
    association thread starts.
    """
    assoc.dul.start()
    assoc._started_dul = True


def _dul_wait(provider: DULServiceProvider, seconds: float) -> None:
    """Block until the socket has data, a PDU is queued to send or the thread is stopped."""
    pipe = getattr(provider, "_node_pipe", None)
    sock = provider.socket.socket if provider.socket is not None else None
    if pipe is None or sock is None or sock.fileno() < 0:
        time.sleep(seconds)
        return
    if not provider.to_provider_queue.empty() or provider._kill_thread:
        return
    reader.quick_ack(sock)
    try:
        ready, _, _ = select.select([sock, pipe[0]], [], [], DUL_IDLE_WAIT_S)
    except (OSError, ValueError):
        time.sleep(seconds)
        return
    if pipe[0] in ready:
        try:
            pipe[0].recv(4096)
        except OSError:
            pass


def _assoc_wait(assoc: Association) -> None:
    """Block until a DIMSE message or ACSE primitive is queued for this association."""
    wake = getattr(assoc, "_node_wake", None)
    if wake is not None:
        wake.wait(ASSOC_IDLE_WAIT_S)
        wake.clear()
        return
    if getattr(assoc, "_node_send_only", False):
        # The DIMSE queue of an association we opened to send belongs to the
        # sending thread: sleep rather than compete with it for the queue's
        # wake-ups (each one costs the sender a thread switch).
        time.sleep(SEND_ONLY_WAIT_S)
        return
    q = assoc.dimse.msg_queue
    with q.not_empty:
        if not q._qsize():
            q.not_empty.wait(SEND_ONLY_WAIT_S)
        if q._qsize():
            # put() wakes one waiter: if it woke this reactor while a sender
            # thread is blocked in get() on the same queue (send_c_find on an
            # association we requested), pass the wake-up on.
            q.not_empty.notify()


class _Clock:
    """Stands in for ``time`` inside pynetdicom's dul or association module (*role*)."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        thread = threading.current_thread()
        if self.role == "dul" and isinstance(thread, DULServiceProvider) and seconds <= 0.001:
            _dul_wait(thread, seconds)
        elif self.role == "association" and isinstance(thread, Association) and seconds == 0.001:
            _assoc_wait(thread)
        else:
            time.sleep(seconds)


def _poke(provider: DULServiceProvider) -> None:
    pipe = getattr(provider, "_node_pipe", None)
    if pipe is not None:
        try:
            pipe[1].send(b"\0")
        except OSError:
            pass  # buffer full (already awake) or closing


_original_run_reactor = DULServiceProvider.run_reactor
_original_send_pdu = DULServiceProvider.send_pdu
_original_stop_dul = DULServiceProvider.stop_dul


def _run_reactor(self: DULServiceProvider) -> None:
    self._node_pipe = socket.socketpair()
    for end in self._node_pipe:
        end.setblocking(False)
    try:
        _original_run_reactor(self)
    finally:
        pipe, self._node_pipe = self._node_pipe, None
        for end in pipe:
            end.close()


def _send_pdu(self: DULServiceProvider, primitive) -> None:
    _original_send_pdu(self, primitive)
    _poke(self)


def _stop_dul(self: DULServiceProvider) -> bool:
    stopping = self.state_machine.current_state == "Sta1"
    if stopping:
        self._kill_thread = True
        _poke(self)
    return _original_stop_dul(self)


def _shared_contexts(contexts: list) -> list:
    """Per-association list of the server's supported contexts (see the module docstring)."""
    return list(contexts)


def tune_server(server: AssociationServer) -> None:
    """No gc.collect() per 60 connections; connections set up in the accepting thread."""
    server.service_actions = types.MethodType(lambda self: None, server)
    server.process_request = types.MethodType(AssociationServer.process_request, server)


def keep_responses_for_sender(assoc: Association) -> None:
    """Stop the association's own reactor thread from taking DIMSE messages off its queue.

    pynetdicom pauses that reactor around each ``send_c_store`` with a flag
    the reactor sets before it parks; right after one C-STORE the flag is
    still set while the reactor wakes up, so the next C-STORE can start
    before the reactor has parked again, and a quick C-STORE-RSP may then be
    taken by the reactor instead of the sender (which waits out the DIMSE
    timeout; seen under load as a C-MOVE hanging for minutes).  On an
    association opened only to send, the peer sends nothing but responses,
    so the reactor never needs the queue.
    """
    dimse = assoc.dimse
    original = dimse.get_msg

    def get_msg(block: bool = False):
        if not block and threading.current_thread() is assoc:
            return None, None
        return original(block)

    dimse.get_msg = get_msg
    assoc._node_send_only = True


def wake_sender_on_abort(assoc: Association) -> None:
    """Make an abort of *assoc* (an association the node requested) wake the thread waiting on it.

    pynetdicom hands a requester waiting for a response "no response" (None
    on the DIMSE queue) when the peer aborts or the connection drops, but not
    when this side aborts: the abort drops the answer on its way, and a job
    thread that another thread aborted to stop it (the node stopping, a
    cancel, a lease lost after a stall) sat out the DIMSE timeout, 120 s to
    10 min, holding up the node's stop.
    """
    original = assoc.abort

    def abort(block: bool = True) -> None:
        try:
            original(block)
        finally:
            assoc.dimse.msg_queue.put((None, None))

    assoc.abort = abort


def skip_reactor_pause(assoc: Association) -> None:
    """Let ``send_c_store`` start at once on an association set up by keep_responses_for_sender.

    send_c_store first waits for the reactor to park, which can take up to
    its idle wait per instance; that reactor cannot take our response, so
    there is nothing to wait for.
    """
    if getattr(assoc, "_node_send_only", False):
        assoc._is_paused = True


def install() -> None:
    DULServiceProvider.run_reactor = _run_reactor
    DULServiceProvider.send_pdu = _send_pdu
    DULServiceProvider.stop_dul = _stop_dul
    transport.deepcopy = _shared_contexts
    dul.time = _Clock("dul")
    association.time = _Clock("association")


def uninstall() -> None:
    """Back to pynetdicom's own reactors (``[dicom].fast_path = false``)."""
    DULServiceProvider.run_reactor = _original_run_reactor
    DULServiceProvider.send_pdu = _original_send_pdu
    DULServiceProvider.stop_dul = _original_stop_dul
    transport.deepcopy = copy.deepcopy
    dul.time = time
    association.time = time


def installed() -> bool:
    return (
        DULServiceProvider.run_reactor is _run_reactor
        and DULServiceProvider.send_pdu is _send_pdu
        and transport.deepcopy is _shared_contexts
        and isinstance(dul.time, _Clock)
        and isinstance(association.time, _Clock)
    )
