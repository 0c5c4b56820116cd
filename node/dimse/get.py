"""Query/Retrieve C-GET SCP: matching instances C-STOREd back on the requester's association."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from .. import metrics
from ..context import NodeContext
from ..index.query import QueryError
from ..statuses import IDENTIFIER_DOES_NOT_MATCH
from . import wire
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


@metrics.timed("c_get")
def handle_get(event, ctx: NodeContext) -> Iterator[Progress]:
    """EVT_C_GET: the stored bytes of every matching instance, sent as C-STORE sub-operations.

    The requester must have proposed each SOP class with the SCP role
    (SCP/SCU role selection); an instance whose class it did not accept
    counts as a failed sub-operation.
    """
    stats(event.assoc).count("get")
    try:
        items = requested_instances(event, ctx.store)
    except QueryError as exc:
        yield refused(IDENTIFIER_DOES_NOT_MATCH, str(exc))
        return
    if (refusal := too_many(items, "C-GET")) is not None:
        yield refusal
        return
    level = miss_level(ctx, event, items)
    progresses = _get_miss(event, ctx, level) if level is not None else None
    # With the fast path, the C-STOREs (and pending responses) of this C-GET
    # may be written to the requester's socket directly, until it ends.
    wire.begin_get(event.assoc)
    if progresses is None:
        progresses = suboperations(event, event.assoc, items, what="C-GET")
    for progress in progresses:
        if not progress.pending:  # logged first: the final response ends the generator
            log.info("C-GET from %s: %s", event.assoc.requestor.ae_title, summary(progress))
        yield progress


def _get_miss(event, ctx: NodeContext, level) -> Iterator[Progress]:
    """C-GET of a study not held: retrieved from a read-through remote, sent back as it arrives."""
    miss = open_miss(ctx, level)
    if isinstance(miss, Progress):
        yield miss
        return
    log.info("C-GET of study %s: not held; sending it as it is retrieved (job %d)", level[0], miss.job_id)
    yield from suboperations_as_they_arrive(
        event, event.assoc, with_first(miss), what="C-GET", expected=miss.expected
    )
