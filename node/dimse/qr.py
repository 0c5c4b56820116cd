"""Query/Retrieve SCP registration: presentation contexts and handlers for C-FIND / C-MOVE / C-GET."""

from __future__ import annotations

from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from ..context import NodeContext
from . import retrieve
from .find import handle_find
from .get import handle_get
from .identifiers import FIND_MODELS, GET_MODELS, MOVE_MODELS
from .move import handle_move


def add_contexts(ae: AE) -> None:
    """Offer the three Q/R models, and let C-GET requesters take the storage SCP role."""
    retrieve.install()
    for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
        ae.add_supported_context(model, DEFAULT_TRANSFER_SYNTAXES)
    # A C-GET requester proposes the storage classes it wants back with the
    # SCP role (role selection); accept that, adding no transfer syntax.
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, [], scu_role=True, scp_role=True)


def handlers(ctx: NodeContext) -> list:
    """The C-FIND / C-MOVE / C-GET event handlers."""
    return [
        (evt.EVT_C_FIND, handle_find, [ctx]),
        (evt.EVT_C_MOVE, handle_move, [ctx]),
        (evt.EVT_C_GET, handle_get, [ctx]),
    ]
