"""Query/Retrieve C-MOVE SCP: matching instances C-STOREd to a configured remote, as stored."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

from pynetdicom.presentation import StoragePresentationContexts

from .. import metrics
from ..context import NodeContext
from ..index.query import QueryError
from ..remotes.sender import Outgoing, Peer, SendError, contexts_for, open_association
from ..statuses import IDENTIFIER_DOES_NOT_MATCH, MOVE_DESTINATION_UNKNOWN, SUCCESS, UNABLE_TO_PROCESS
from .associations import stats
from .miss import miss_level, open_miss, with_first
from .retrieve import (
    Progress,
    refused,
    requested_instances,
    suboperations,
    suboperations_as_they_arrive,
    summary,
    too_many,
)

log = logging.getLogger(__name__)


@metrics.timed("c_move")
def handle_move(event, ctx: NodeContext) -> Iterator[Progress]:
    """EVT_C_MOVE: one association to the destination, one C-STORE per matching instance.

    Unknown destination -> 0xA801; destination unreachable -> 0xC000 naming
    it; a bad identifier -> 0xA900 naming the problem.
    """
    stats(event.assoc).count("move")
    calling = event.assoc.requestor.ae_title
    destination = (event.move_destination or "").strip()
    for progress in _move(event, ctx, destination):
        if not progress.pending:  # logged first: the final response ends the generator
            log.info("C-MOVE from %s to %s: %s", calling, destination or "?", summary(progress))
        yield progress


def _move(event, ctx: NodeContext, destination: str) -> Iterator[Progress]:
    remote = ctx.settings.remote_by_ae(destination)
    if remote is None:
        reason = f"move destination {destination!r} is not a configured remote"
        yield refused(MOVE_DESTINATION_UNKNOWN, reason)
        return
    try:
        items = requested_instances(event, ctx.store)
    except QueryError as exc:
        yield refused(IDENTIFIER_DOES_NOT_MATCH, str(exc))
        return
    if (refusal := too_many(items, "C-MOVE")) is not None:
        yield refusal
        return
    level = miss_level(ctx, event, items)
    if level is not None:
        yield from _move_miss(event, ctx, remote, level)
        return
    if not items:
        yield Progress(SUCCESS)
        return
    peer = Peer(remote.ae_title, remote.host, remote.port)
    try:
        assoc = open_association(peer, ctx.settings.dicom.ae_title, contexts_for(items))
    except SendError as exc:
        yield refused(UNABLE_TO_PROCESS, f"move destination {exc}", failed=len(items))
        return
    try:
        yield from suboperations(event, assoc, items, what="C-MOVE")
    finally:
        if assoc.is_established:
            assoc.release()


def _miss_contexts(first: Outgoing) -> list:
    """Contexts for instances not seen yet: the first one's, then every storage class in its syntax."""
    others = [
        replace(first, sop_class_uid=cx.abstract_syntax)
        for cx in StoragePresentationContexts
        if cx.abstract_syntax != first.sop_class_uid
    ]
    return contexts_for([first, *others])


def _move_miss(event, ctx: NodeContext, remote, level) -> Iterator[Progress]:
    """C-MOVE of a study not held: retrieved from a read-through remote, forwarded as it arrives."""
    miss = open_miss(ctx, level)
    if isinstance(miss, Progress):
        yield miss
        return
    log.info("C-MOVE of study %s: not held; forwarding it as it is retrieved (job %d)", level[0], miss.job_id)
    peer = Peer(remote.ae_title, remote.host, remote.port)
    try:
        assoc = open_association(peer, ctx.settings.dicom.ae_title, _miss_contexts(miss.first))
    except SendError as exc:
        yield refused(UNABLE_TO_PROCESS, f"move destination {exc}", failed=miss.expected or 1)
        return
    try:
        yield from suboperations_as_they_arrive(
            event, assoc, with_first(miss), what="C-MOVE", expected=miss.expected
        )
    finally:
        if assoc.is_established:
            assoc.release()
