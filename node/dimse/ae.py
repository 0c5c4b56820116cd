"""Build the node's pynetdicom AE and the handlers bound to it; start listening.

The wire layer (:mod:`node.dimse.wire`) must be installed first
(``node.server.serve`` does it); importing this module changes nothing in
pynetdicom.
"""

from __future__ import annotations

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from .. import metrics
from ..context import NodeContext
from ..index.db import database
from ..index.figures import stored_syntaxes
from ..statuses import SUCCESS
from ..transcode.stored import StoredSyntaxes
from ..uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from ..workers.slots import AssociationSlots
from . import associations, qr, storage, wire


def build_ae(ctx: NodeContext) -> AE:
    """The AE that listens on ``[dicom].port``: echo, storage and Query/Retrieve."""
    s = ctx.settings.dicom
    ae = AE(ae_title=s.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = wire.advertised_max_pdu(s.max_pdu)
    ae.acse_timeout = s.acse_timeout
    ae.dimse_timeout = s.dimse_timeout
    ae.network_timeout = s.network_timeout
    ae.maximum_associations = s.max_associations
    # allowed_calling_aets plus every remote's AE title (remotes can always call back).
    ae.require_calling_aet = list(ctx.settings.calling_aets_accepted())
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    qr.add_contexts(ae)
    return ae


def count_echo(assoc) -> int:
    """A C-ECHO-RQ on *assoc*: counted for its log line, answered with success."""
    associations.stats(assoc).count("echo")
    return SUCCESS


def _echo(event) -> int:
    return count_echo(event.assoc)


def handlers(ctx: NodeContext) -> list:
    """Event handlers bound when the AE starts listening."""
    return [
        *associations.handlers(ctx.settings.dicom),
        (evt.EVT_ESTABLISHED, metrics.association_opened),
        (evt.EVT_CONN_CLOSE, metrics.association_closed),
        (evt.EVT_C_ECHO, _echo),
        (evt.EVT_C_STORE, storage.handle_store, [ctx]),
        *qr.handlers(ctx),
    ]


def _load_stored_syntaxes() -> dict[str, frozenset[str]]:
    try:
        return stored_syntaxes()
    finally:
        database.close()  # the background thread's own connection


def stored_syntaxes_hint(ctx: NodeContext) -> StoredSyntaxes:
    """What the node stores each SOP class in, kept up to date by the ingest path (for C-GET negotiation)."""
    hint = StoredSyntaxes(_load_stored_syntaxes)
    ctx.ingest.add_index_hook(
        lambda instance, _source: hint.add(instance.sop_class_uid, instance.transfer_syntax)
    )
    hint.refresh_in_background()
    return hint


def start(ctx: NodeContext, *, sock=None, slots: AssociationSlots | None = None):
    """Start listening (non-blocking); returns the pynetdicom server.

    A worker process passes the listening *sock* the supervisor bound and the
    node-wide association *slots* (``max_associations`` counted over every worker).
    """
    s = ctx.settings.dicom
    hint = stored_syntaxes_hint(ctx)
    ae = build_ae(ctx)
    evt_handlers = handlers(ctx)
    if slots is not None:
        evt_handlers += wire.shared_association_limit(ae, slots)
    return wire.serve(
        ae,
        (s.host, s.port),
        evt_handlers,
        receiver=storage.Receiver(ctx, echo=count_echo),
        temp_path=ctx.store.temp_path,
        retrieve_uids=qr.RETRIEVE_MODELS,
        stored_syntaxes=hint.of,
        sock=sock,
    )
