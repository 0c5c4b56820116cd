"""Build the node's pynetdicom AE and the handlers bound to it."""

from __future__ import annotations

import socket

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from .. import metrics
from ..context import NodeContext
from ..uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from . import associations, fast_store, qr, storage, tuning

# Received data sets are spooled to a file by pynetdicom (bounded memory for
# any instance size) and that file is what the ingest path moves into place.
_config.STORE_RECV_CHUNKED_DATASET = True
# Instances sent by C-GET / C-MOVE / forwarding go out as the stored bytes.
_config.STORE_SEND_CHUNKED_DATASET = True
# pynetdicom's own per-PDU narration costs CPU on every message; our association line suffices.
_config.LOG_HANDLER_LEVEL = "none"
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
tuning.apply()
fast_store.install()


def set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off: small PDUs would otherwise wait ~40 ms for an ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def build_ae(ctx: NodeContext) -> AE:
    """The AE that listens on ``[dicom].port``: echo, storage (and Q/R when present)."""
    s = ctx.settings.dicom
    ae = AE(ae_title=s.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = s.max_pdu
    ae.acse_timeout = s.acse_timeout
    ae.dimse_timeout = s.dimse_timeout
    ae.network_timeout = s.network_timeout
    ae.maximum_associations = 64
    # allowed_calling_aets plus every remote's AE title (remotes can always call back).
    ae.require_calling_aet = list(ctx.settings.calling_aets_accepted())
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    qr.add_contexts(ae)
    return ae


def _echo(event) -> int:
    associations.stats(event.assoc).count("echo")
    return 0x0000


def handlers(ctx: NodeContext) -> list:
    """Event handlers bound when the AE starts listening."""
    return [
        *associations.handlers(),
        (evt.EVT_ESTABLISHED, metrics.association_opened),
        (evt.EVT_CONN_CLOSE, metrics.association_closed),
        (evt.EVT_C_ECHO, _echo),
        (evt.EVT_C_STORE, storage.handle_store, [ctx]),
        (evt.EVT_CONN_OPEN, storage.handle_conn_open, [ctx]),
        (evt.EVT_CONN_CLOSE, storage.handle_conn_close),
        *qr.handlers(ctx),
    ]


def start(ctx: NodeContext):
    """Start listening (non-blocking); returns the pynetdicom server."""
    ae = build_ae(ctx)
    s = ctx.settings.dicom
    return ae.start_server((s.host, s.port), block=False, evt_handlers=handlers(ctx))
