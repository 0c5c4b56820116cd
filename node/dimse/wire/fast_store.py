"""C-STORE and C-ECHO answered in the DUL thread (fast path).

pynetdicom passes every DIMSE message from its DUL thread to the
association thread, through its service class and event machinery, and
encodes the response with pydicom before handing it back to the DUL thread
to send.  For the message a Storage SCP receives thousands of times a minute
that costs more than storing the instance, and it is most of what a C-ECHO
costs.  On associations the node accepted, :mod:`.inbound` hands their
C-STORE-RQs here: the data set fragments are written straight into a
Part-10 file in the store's temp folder, the node's receiver ingests it, and
the C-STORE-RSP (:func:`.codec.c_store_rsp`) is written to the socket.  The
response goes out only after the receiver returns, i.e. once the instance is
durable.  Whatever the receiver raises or returns, the peer gets a response
and the association goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ...part10 import header_bytes
from ...statuses import OUT_OF_RESOURCES, PROCESSING_FAILURE, SUCCESS
from . import codec

if TYPE_CHECKING:
    from .inbound import Receiver, StoreRequest

log = logging.getLogger("node.dimse.wire")


@dataclass(frozen=True)
class Handlers:
    """The fast path of one association the node accepted."""

    receiver: Receiver
    temp_path: Callable[[], Path]


@dataclass
class Incoming:
    """A C-STORE-RQ whose data set is being written to *path*."""

    request: StoreRequest
    path: Path | None = None
    file: BinaryIO | None = None
    error: str = ""


def enable(assoc, receiver: Receiver, temp_path: Callable[[], Path]) -> None:
    """Take the C-STORE-RQs and C-ECHO-RQs of *assoc* on the fast path."""
    assoc._node_fast = Handlers(receiver, temp_path)


def handlers(assoc) -> Handlers | None:
    return getattr(assoc, "_node_fast", None)


def _fail(incoming: Incoming, exc: OSError) -> None:
    incoming.error = f"could not write the data set: {exc.strerror or exc}"
    discard(incoming)


def begin(provider, fast: Handlers, request: StoreRequest) -> Incoming:
    """Open the Part-10 file for *request*'s data set (a write failure is kept for the answer)."""
    assoc = provider.assoc
    incoming = Incoming(request)
    transfer_syntax = assoc._accepted_cx[request.context_id].transfer_syntax[0]
    try:
        incoming.path = fast.temp_path()
        incoming.file = open(incoming.path, "wb")  # noqa: SIM115 - closed by finish() or discard()
        incoming.file.write(
            header_bytes(request.sop_class, request.sop_instance, transfer_syntax, assoc.requestor.ae_title)
        )
    except OSError as exc:
        _fail(incoming, exc)
    return incoming


def data(incoming: Incoming, fragment: bytes) -> None:
    """Append one data set fragment (its first byte is the PDV control header)."""
    if incoming.file is None:
        return
    try:
        incoming.file.write(memoryview(fragment)[1:])
    except OSError as exc:
        _fail(incoming, exc)


def finish(provider, incoming: Incoming) -> None:
    """The last fragment arrived: ingest the file, then send the C-STORE-RSP."""
    assoc = provider.assoc
    fast = handlers(assoc)
    request = incoming.request
    if incoming.file is not None:
        try:
            incoming.file.close()
        except OSError as exc:
            _fail(incoming, exc)
        incoming.file = None
    try:
        if incoming.error:
            status, comment = fast.receiver.failed(assoc, request.sop_instance, incoming.error)
        else:
            status, comment = fast.receiver.stored(assoc, incoming.path)
    except Exception as exc:  # noqa: BLE001 - the peer is answered whatever happened
        log.exception("C-STORE of %s failed", request.sop_instance)
        status = OUT_OF_RESOURCES if isinstance(exc, OSError) else PROCESSING_FAILURE
        comment = f"could not store: {exc}"
    if status != SUCCESS and incoming.path is not None:
        incoming.path.unlink(missing_ok=True)
    command = codec.c_store_rsp(request.sop_class, request.sop_instance, request.message_id, status, comment)
    provider.dul.socket.send(codec.message(request.context_id, command, None, provider.maximum_pdu_size))


def echo(provider, fast: Handlers, context_id: int, values: dict[int, bytes]) -> None:
    """Answer a C-ECHO-RQ."""
    status = fast.receiver.echo(provider.assoc)
    command = codec.c_echo_rsp(
        codec.read_uid(values, codec.AFFECTED_SOP_CLASS), codec.read_us(values, codec.MESSAGE_ID) or 0, status
    )
    provider.dul.socket.send(codec.message(context_id, command, None, provider.maximum_pdu_size))


def discard(incoming: Incoming) -> None:
    """Close and delete the file of a data set that will not be completed."""
    if incoming.file is not None:
        try:
            incoming.file.close()
        except OSError:
            pass
        incoming.file = None
    if incoming.path is not None:
        incoming.path.unlink(missing_ok=True)
        incoming.path = None
