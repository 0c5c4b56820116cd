"""The transfer syntax of the storage contexts a peer proposes: the node's rules, not pynetdicom's.

A C-GET requester proposes each storage SOP class it wants back with the
SCP role (role selection); the node then C-STOREs on those contexts, one
transfer syntax per context.  pynetdicom accepts the first of the
*acceptor's* syntaxes that the requester proposed, so a workstation
proposing ``[JPEG-LS, explicit VR LE, implicit VR LE]`` got explicit VR
whatever it preferred and whatever was stored.  The choice follows
:func:`node.transcode.acceptor_syntax` instead: a proposed syntax the node
stores that SOP class in (so the stored bytes go out), else the requester's
first choice among the syntaxes the node can produce without loss.  Which
instances a C-GET will send is not known when the association is
negotiated: what the node stores per SOP class comes from a hint the caller
passes (``node.transcode.stored.StoredSyntaxes``); each instance is then
sent as stored or converted (:func:`node.remotes.sender.store_one`).

A peer that will C-STORE to the node proposing ``[JPEG-LS, explicit VR LE]``
in one context got explicit VR too, so it had to decompress and the node
stored something other than what the peer held.  The choice follows
:func:`node.transcode.receiving_syntax`: the peer's first choice when it
is compressed, else the node's order (explicit VR LE first).

Hook (function, when serving): ``pynetdicom.acse.negotiate_as_acceptor`` is
wrapped; pynetdicom's result stands for every context these rules leave alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import pynetdicom.acse

from ...transcode import acceptor_syntax, receiving_syntax

StoredOf = Callable[[str], Collection[str] | None]


def _nothing_known(_sop_class: str) -> None:
    return None


def _choose(rq_contexts, ac_contexts, roles, result, stored_of: StoredOf) -> None:
    """Re-pick the transfer syntax of each accepted context by who will send on it."""
    wanted_scp = {str(uid) for uid, (_scu, scp) in (roles or {}).items() if scp}
    requested = {cx.context_id: cx for cx in rq_contexts}
    supported = {str(cx.abstract_syntax): cx for cx in ac_contexts}
    for cx in result:
        abstract = str(cx.abstract_syntax)
        ours = supported.get(abstract)
        proposal = requested.get(cx.context_id)
        if cx.result != 0x00 or ours is None or proposal is None:
            continue
        proposed = [str(ts) for ts in proposal.transfer_syntax]
        if abstract in wanted_scp and cx.as_scu:
            # The node will send (C-GET): nothing stored in that class (or not
            # known yet) means any instance might come, so lossless only.
            offered = [ts for ts in proposed if ts in ours.transfer_syntax]
            choice = acceptor_syntax(offered, stored_of(abstract) or None)
        else:
            choice = receiving_syntax(proposed, ours.transfer_syntax)
        if choice and choice != cx.transfer_syntax[0]:
            cx.transfer_syntax = [choice]


def install(stored_of: StoredOf | None = None) -> None:
    """Wrap pynetdicom's acceptor negotiation (idempotent).

    *stored_of(sop_class)*: the transfer syntaxes the node stores that class
    in, or None when it does not know.
    """
    stored_of = stored_of or _nothing_known
    original = getattr(pynetdicom.acse.negotiate_as_acceptor, "node_original", None)
    original = original or pynetdicom.acse.negotiate_as_acceptor

    def negotiate(rq_contexts, ac_contexts, roles=None):
        result, reply_roles = original(rq_contexts, ac_contexts, roles)
        _choose(rq_contexts, ac_contexts, roles, result, stored_of)
        return result, reply_roles

    negotiate.node_original = original  # type: ignore[attr-defined]
    pynetdicom.acse.negotiate_as_acceptor = negotiate


def installed() -> bool:
    return hasattr(pynetdicom.acse.negotiate_as_acceptor, "node_original")
