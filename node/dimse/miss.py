"""C-MOVE / C-GET of a study not held here: served from a read-through retrieval as it arrives.

The handlers (node/dimse/move.py, get.py) ask :func:`miss_level` whether a
request is a miss the read-through cache can serve (one study named by UID,
nothing of it held, or its retrieval under way or failed), then
:func:`open_miss` joins or starts the retrieval (node/remotes/read_through.py)
and waits for the first instance.  What it returns is either a refusal to
answer at once or a :class:`Miss` whose items are C-STOREd by
:func:`~node.dimse.retrieve.suboperations_as_they_arrive` as they come in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..context import NodeContext
from ..dicomweb.instances import NotFound, StoredInstance
from ..index import jobs
from ..remotes import read_through
from ..remotes.sender import Outgoing, outgoing
from ..statuses import SUBOPS_ALL_FAILED, SUCCESS, UNABLE_TO_PROCESS
from .retrieve import Progress, Shortfall, refused, requested_study

log = logging.getLogger(__name__)


@dataclass
class Miss:
    """A retrieval being served: the first instance, the items as they arrive, the expected count."""

    first: Outgoing
    items: Iterator[Outgoing]
    expected: int | None
    job_id: int


Level = tuple[str, str | None, str | None]


def miss_level(ctx: NodeContext, event, items: Sequence[Outgoing]) -> Level | None:
    """The (study, series, instance) to retrieve on a miss, or None to answer from what is held."""
    service = ctx.read_through
    if service is None or not service.enabled:
        return None
    level = requested_study(event)
    if level is None:
        return None
    study, _series, sop = level
    if not items or (sop is None and service.pending(study) is not None):
        return level
    return None


def _outgoing(ctx: NodeContext, stream: Iterator[StoredInstance]) -> Iterator[Outgoing]:
    try:
        for inst in stream:
            yield outgoing(ctx.store, inst)
    except read_through.Incomplete as exc:
        raise Shortfall(str(exc), exc.expected, exc.missing) from None
    except (read_through.Unavailable, NotFound) as exc:
        raise Shortfall(str(exc), 0, ()) from None


def open_miss(ctx: NodeContext, level: Level) -> Miss | Progress:
    """Join or start the study's retrieval and wait for its first instance; a final Progress if none comes."""
    assert ctx.read_through is not None
    try:
        arrivals = ctx.read_through.open(*level)
    except NotFound:
        return Progress(SUCCESS)  # nothing matches, here or upstream
    except read_through.Unavailable as exc:
        return refused(UNABLE_TO_PROCESS, str(exc))
    stream = iter(arrivals)
    try:
        first = next(stream, None)
    except NotFound:
        return Progress(SUCCESS)
    except read_through.Unavailable as exc:
        return refused(UNABLE_TO_PROCESS, str(exc))
    except read_through.Incomplete as exc:
        failed = max(1, exc.expected, len(exc.missing))
        return Progress(SUBOPS_ALL_FAILED, failed=failed, failed_uids=tuple(exc.missing), comment=str(exc))
    if first is None:
        return refused(UNABLE_TO_PROCESS, f"the retrieval of study {level[0]} delivered nothing")
    job = jobs.get(arrivals.job_id)
    expected = job.total if job is not None and level[1] is None and level[2] is None else None
    if level[2] is not None:
        expected = 1
    return Miss(outgoing(ctx.store, first), _outgoing(ctx, stream), expected, arrivals.job_id)


def with_first(miss: Miss) -> Iterator[Outgoing]:
    """The miss's items, the first one included."""
    yield miss.first
    yield from miss.items
