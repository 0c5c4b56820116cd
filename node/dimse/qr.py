"""Query/Retrieve SCP registration: presentation contexts and handlers for C-FIND / C-MOVE / C-GET."""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from ..context import NodeContext
from .find import handle_find
from .get import handle_get
from .identifiers import FIND_MODELS, GET_MODELS, MOVE_MODELS
from .move import handle_move


def add_contexts(ae: AE) -> None:
    """Offer the three Q/R models, and let C-GET requesters take the storage SCP role."""
    for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
        ae.add_supported_context(model, DEFAULT_TRANSFER_SYNTAXES)
    storage = {cx.abstract_syntax for cx in AllStoragePresentationContexts}
    for cx in ae.supported_contexts:
        if cx.abstract_syntax not in storage:
            continue
        # A C-GET requester proposes the storage classes it wants back with the
        # SCP role (role selection): accept that.
        cx.scu_role = cx.scp_role = True
        # pynetdicom accepts the first of *our* syntaxes the peer proposed, and
        # implicit VR comes first in its list: explicit VR little endian first
        # for a peer sending to the node, unless its first choice is compressed.
        # The contexts a C-GET requester takes the SCP role on follow the
        # requester's order instead (wire.negotiation).
        if ExplicitVRLittleEndian in cx.transfer_syntax:
            rest = [ts for ts in cx.transfer_syntax if ts != ExplicitVRLittleEndian]
            cx.transfer_syntax = [ExplicitVRLittleEndian, *rest]


# The SOP classes whose requests the wire layer routes to the node's retrieve handlers.
RETRIEVE_MODELS = (*MOVE_MODELS, *GET_MODELS)


def handlers(ctx: NodeContext) -> list:
    """The C-FIND / C-MOVE / C-GET event handlers."""
    return [
        (evt.EVT_C_FIND, handle_find, [ctx]),
        (evt.EVT_C_MOVE, handle_move, [ctx]),
        (evt.EVT_C_GET, handle_get, [ctx]),
    ]
