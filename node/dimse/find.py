"""Query/Retrieve C-FIND SCP: the request identifier through the query engine, matches streamed back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing

from pydicom.dataset import Dataset

from .. import metrics
from ..cache.query import AVAILABILITY, Merge, ReadThrough
from ..context import NodeContext
from ..index.query import QueryError, run
from ..statuses import CANCELLED, IDENTIFIER_DOES_NOT_MATCH, PENDING, UNABLE_TO_PROCESS
from . import wire
from .associations import stats
from .identifiers import build_response, root_of, to_query

log = logging.getLogger(__name__)


def failure(status: int, reason: str) -> Dataset:
    """A failure status carrying *reason* as its ErrorComment."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = wire.error_comment(reason)
    return ds


@metrics.timed("c_find")
def handle_find(event, ctx: NodeContext) -> Iterator[tuple[object, Dataset | None]]:
    """EVT_C_FIND: yield (pending, identifier) per match, then pynetdicom sends success.

    A C-CANCEL stops the stream with status Cancel; an identifier the engine
    refuses gets 0xA900 with the reason in ErrorComment.  The read-through
    remotes' matches follow the local ones (node.cache.query).  An answer
    that lacks a remote's part still ends with Success: PS3.4 C.4.1.1.4 has
    no warning status for C-FIND, so the shortfall is logged.
    """
    stats(event.assoc).count("find")
    calling = event.assoc.requestor.ae_title
    try:
        identifier = event.identifier
        query, wanted = to_query(identifier, root_of(event.request.AffectedSOPClassUID))
        local = run(query)
        merge = Merge(query, ReadThrough.from_settings(ctx.settings))
    except QueryError as exc:
        log.warning("C-FIND from %s refused: %s", calling, exc)
        yield failure(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
        return
    except Exception as exc:  # a broken identifier or the index failing: say so, keep serving
        log.exception("C-FIND from %s failed", calling)
        yield failure(UNABLE_TO_PROCESS, f"query failed: {exc}"), None
        return
    charset = identifier.get("SpecificCharacterSet", "")
    constants = {"RetrieveAETitle": ctx.settings.dicom.ae_title}
    # With the fast path, pending responses go straight to the socket.
    write = wire.find_writer(event)
    with closing(local):
        for match in merge.matches(local):
            if event.is_cancelled:
                yield CANCELLED, None
                return
            # The engine returns "" for a requested InstanceAvailability; an upstream match says NEARLINE.
            constants[AVAILABILITY] = str(match.pop(AVAILABILITY, "") or "ONLINE")
            identifier = build_response(query.level, wanted, match, charset=charset, constants=constants)
            if write is None:
                yield PENDING, identifier
                continue
            if not event.assoc.is_established:
                return
            try:
                write(identifier)
            except OSError:  # the peer went away; pynetdicom notices and ends the association
                return
    if merge.shortfalls:
        log.warning(
            "C-FIND from %s: answered without %s",
            calling,
            "; ".join(str(s) for s in merge.shortfalls),
        )
