"""The DIMSE wire layer: everything the node does below pynetdicom's public API, in one place.

The rest of the node uses pynetdicom the way its ``apps/qrscp`` does (an AE,
event handlers, ``send_c_*``) and this package for the rest.  Nothing here
is installed by importing it: ``node.server.serve`` (and each CLI command
that talks DICOM) calls :func:`install` with ``[dicom].fast_path``.

Hooks into pynetdicom, and when they are in place (:func:`installed` checks
each one):

=====================  =========================================================  ===========
hook                   pynetdicom internal it replaces                            installed
=====================  =========================================================  ===========
``reader``             ``dul.DULServiceProvider._read_pdu_data``: PDU lengths     always
                       bounded, stalls timed out, A-ABORT (:mod:`.reader`)        (safety)
``inbound``            ``dimse.DIMSEServiceProvider.receive_primitive``: command  always
                       sets checked and bounded, 0xA700 on a full disk            (safety)
                       (:mod:`.inbound`)
``settings``           ``pynetdicom._config``: received data sets spooled to a    always
                       file, sent ones streamed from it, no per-PDU narration,    (safety)
                       no patient data in pynetdicom's log
``retrieve``           ``association.uid_to_service_class``: C-MOVE / C-GET to    when serving
                       the node's handlers (:mod:`.retrieve_service`)             (function)
``negotiation``        ``acse.negotiate_as_acceptor``: the transfer syntax of the  when serving
                       storage contexts a C-GET requester takes the SCP role on   (function)
                       is the requester's preference, and a peer sending to the
                       node gets its compressed first choice (:mod:`.negotiation`)
``association_limit``  ``AE.maximum_associations``, read by pynetdicom's ACSE in   with workers
                       the negotiating thread: answered from the node-wide slots  (safety)
                       shared by every worker (:mod:`.association_limit`)
``listener``           backlog 128, kernel send/receive timeouts, TCP_NODELAY     when serving
                       (socket API only)                                          (safety)
``contexts``           the supported contexts' ``_transfer_syntax`` lists share    when serving
                       their UIDs, so pynetdicom's per-connection deepcopy costs  (safety)
                       ~20 ms, not ~350 ms
``sender``             ``get_msg`` and ``abort`` of each association the node     per association
                       requests: only the requesting thread takes its responses   (safety)
                       (pynetdicom's reactor can steal one and the sender waits
                       out the DIMSE timeout), and an abort from another thread
                       (a job told to stop) wakes it with "no response"
``fast_read``          how the reader reads a PDU: one ``recv_into``, TCP_QUICKACK fast path
                       before waiting, a P-DATA-TF handed straight to
                       ``inbound`` (no PDU objects, no state-machine round)
``fast_store``         C-STORE-RQ / C-ECHO-RQ answered in the DUL thread          fast path
                       (:mod:`.fast_store`, routed by ``inbound``)
``direct``             C-STOREs of stored files, pending C-FIND / C-GET           fast path
                       responses written to the socket (:mod:`.direct`)
``reactor``            ``dul.time``, ``association.time``, ``DULServiceProvider.  fast path
                       run_reactor / send_pdu / stop_dul``, ``transport.deepcopy``,
                       the server's ``service_actions`` / ``process_request``,
                       waking queues, the DUL thread started first, no wait
                       for the reactor to park before a C-STORE (:mod:`.reactor`)
``validation``         pydicom's value validation off (``pydicom.config``), UID   fast path
                       checks cached (``_config.VALIDATORS["UI"]``,
                       ``pydicom.uid.UID.is_valid``) (:mod:`.validation`)
=====================  =========================================================  ===========

With ``fast_path = false`` the node runs on pynetdicom's own code paths
plus the safety hooks, which are as small as the guards allow; the DIMSE
tests run both ways.  pynetdicom and pydicom are pinned to the versions
these hooks were written and tested against (pyproject.toml);
tests/test_wire_contract.py fails when a hooked internal moves or one of the
hand-encoded messages (:mod:`.codec`) stops matching pynetdicom's encoder.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pynetdicom import _config

from . import direct, inbound, negotiation, reactor, reader, retrieve_service, validation
from .association_limit import limit as shared_association_limit
from .codec import error_comment
from .inbound import Receiver
from .limits import advertised_max_pdu
from .listener import prepare_socket, serve

__all__ = [
    "Receiver",
    "abort_requested",
    "advertised_max_pdu",
    "error_comment",
    "fast_path",
    "find_writer",
    "begin_get",
    "install",
    "installed",
    "prepare",
    "refusal",
    "send_dataset",
    "send_file",
    "serve",
    "shared_association_limit",
]

_installed_mode: bool | None = None


def install(*, fast_path: bool = True) -> None:
    """Put the safety hooks in place, and the fast-path hooks when *fast_path* (or take them out)."""
    global _installed_mode
    # Received data sets go to a file (bounded memory for any instance size)
    # that the ingest path moves into place; sent ones are read from it.
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    # pynetdicom's per-PDU narration costs CPU on every message, and its
    # identifier logging would put patient data in the log.
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    reader.install(fast=fast_path)
    inbound.install()
    if fast_path:
        reactor.install()
        validation.install()
    else:
        reactor.uninstall()
        validation.uninstall()
    _installed_mode = fast_path


def fast_path() -> bool:
    """Whether the fast path is installed."""
    return bool(_installed_mode) and reader.fast()


def installed() -> dict[str, bool]:
    """Which hooks are in place right now, checked on pynetdicom itself."""
    fast = fast_path()
    return {
        "reader": reader.installed(),
        "inbound": inbound.installed(),
        "settings": _config.STORE_RECV_CHUNKED_DATASET and _config.STORE_SEND_CHUNKED_DATASET,
        "retrieve": retrieve_service.installed(),
        "negotiation": negotiation.installed(),
        "fast_read": reader.installed() and reader.fast(),
        "fast_store": inbound.installed() and fast,
        "direct": fast,
        "reactor": reactor.installed(),
        "validation": validation.installed(),
    }


def refusal(assoc) -> str:
    """Why the wire layer aborted *assoc* (already logged), or "" if it did not."""
    return getattr(assoc, "_node_refusal", "")


def prepare(assoc, *, send_only: bool = False) -> None:
    """Set up an association the node requested; *send_only* when it will only C-STORE on it."""
    assoc._node_requested = True
    prepare_socket(assoc)
    # Safety, both modes: without these a response can be taken by the wrong thread, or
    # waited for after an abort threw it away (hangs).
    reactor.keep_responses_for_sender(assoc)
    reactor.wake_sender_on_abort(assoc)
    if send_only and fast_path():
        # Nothing but our C-STOREs is written to it: they may go straight to the socket.
        assoc._node_direct = True


def abort_requested() -> int:
    """Abort every association the node requested that is still open; return how many.

    For the end of a stop, once the jobs had their grace: pynetdicom's DUL
    threads are not daemons, so an association left open (by a job thread
    left behind, waiting on a peer that does not answer) would keep the
    process alive after it said "stopped", up to the network timeout.  The
    abort also wakes the thread waiting on it (see ``prepare``).
    """
    requested = [t for t in threading.enumerate() if getattr(t, "_node_requested", False)]
    for assoc in requested:
        assoc.abort()
    return len(requested)


def _message_id(assoc) -> int:
    """The next Message ID for a request the node sends on *assoc* (1..65535, then round again)."""
    current = getattr(assoc, "_node_message_id", 0) % 0xFFFF + 1
    assoc._node_message_id = current
    return current


def _answer(rsp) -> tuple[int | None, str]:
    status = getattr(rsp, "Status", None)
    if status is None:
        return None, ""
    return int(status), str(getattr(rsp, "ErrorComment", "") or "")


def send_file(
    assoc,
    path: Path,
    sop_class: str,
    sop_uid: str,
    transfer_syntax: str,
    *,
    originator_ae: str = "",
    originator_id: int | None = None,
) -> tuple[int | None, str]:
    """C-STORE the stored file *path* as it is; (status or None if no answer, ErrorComment).

    The peer must have accepted *transfer_syntax* for *sop_class*.  Raises
    OSError when the connection fails while sending.
    """
    message_id = _message_id(assoc)
    if fast_path():
        reactor.skip_reactor_pause(assoc)
        if direct.active(assoc):
            try:
                return _answer(
                    direct.send_file(
                        assoc,
                        path,
                        sop_class,
                        sop_uid,
                        transfer_syntax,
                        message_id=message_id,
                        originator_ae=originator_ae,
                        originator_id=originator_id,
                    )
                )
            except direct.NotDirect:
                pass
    return _answer(
        assoc.send_c_store(
            path, msg_id=message_id, originator_aet=originator_ae or None, originator_id=originator_id
        )
    )


def send_dataset(
    assoc, dataset, *, originator_ae: str = "", originator_id: int | None = None
) -> tuple[int | None, str]:
    """C-STORE a decoded data set (pynetdicom encodes it in the accepted transfer syntax)."""
    message_id = _message_id(assoc)
    if fast_path():
        reactor.skip_reactor_pause(assoc)
    return _answer(
        assoc.send_c_store(
            dataset, msg_id=message_id, originator_aet=originator_ae or None, originator_id=originator_id
        )
    )


def find_writer(event):
    """A function writing one pending C-FIND response straight to the socket, or None (use yield)."""
    if not fast_path() or not direct.usable(event.assoc):
        return None
    return lambda identifier: direct.send_find_pending(event, identifier)


def begin_get(assoc) -> None:
    """A C-GET starts on *assoc*: its C-STOREs and pending responses may go to the socket directly."""
    if fast_path():
        direct.begin(assoc)
