"""Storage SCP: received C-STORE data sets into the ingest path.

With the fast path the wire layer takes the C-STORE-RQs of associations the
node accepts and calls :class:`Receiver`; otherwise pynetdicom's EVT_C_STORE
(:func:`handle_store`) does.  Both end in :func:`store_received`, which
never raises: whatever happens, the peer gets a status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from .. import metrics
from ..context import NodeContext
from ..ingest import Source
from ..statuses import OUT_OF_RESOURCES, PROCESSING_FAILURE, SUCCESS, status_text
from .associations import stats
from .wire import error_comment

log = logging.getLogger("node.dimse")

LOGGED_REFUSALS = 10  # refusals logged one by one per association


@metrics.timed("c_store")
def store_received(ctx: NodeContext, assoc, path: Path) -> tuple[int, str]:
    """Ingest a spooled Part-10 file received on *assoc*; return (DIMSE status, ErrorComment)."""
    calling = assoc.requestor.ae_title
    # An instance sent by a known remote (e.g. the answer to our C-MOVE) is
    # tagged with it, so that store-and-forward never sends it back there.
    remote = ctx.settings.remote_by_ae(calling)
    source = Source("dimse", calling_aet=calling, remote=remote.name if remote else "")
    try:
        outcome = ctx.ingest.ingest_file(path, source, take=True)
    except Exception as exc:  # noqa: BLE001 - the peer is answered whatever happened
        log.exception("C-STORE from %s: ingest failed", calling)
        path.unlink(missing_ok=True)
        status = OUT_OF_RESOURCES if isinstance(exc, OSError) else PROCESSING_FAILURE
        stats(assoc).count("failed")
        return status, error_comment(f"could not store: {exc}")
    if outcome.ok:
        stats(assoc).count(outcome.status.value)
        return SUCCESS, ""
    path.unlink(missing_ok=True)  # nothing half-written stays in the temp folder
    stats(assoc).count("failed")
    if not outcome.logged:
        _log_refusal(assoc, calling, outcome)
    # The short form when the ingest path gave one (e.g. "already in study <UID>"): 64 characters.
    return outcome.failure_code, error_comment(outcome.comment or outcome.reason)


def _log_refusal(assoc, calling: str, outcome) -> None:
    """One WARNING per refused instance, naming the status and the reason (the first few per association).

    The association line only counts the failures; this says why.  A peer
    sending thousands of bad instances gets :data:`LOGGED_REFUSALS` lines, not thousands.
    """
    logged = getattr(assoc, "_node_refusals_logged", 0)
    assoc._node_refusals_logged = logged + 1
    if logged < LOGGED_REFUSALS:
        instance = f" (SOP Instance {outcome.sop_instance_uid})" if outcome.sop_instance_uid else ""
        log.warning(
            "C-STORE from %s refused with %s: %s%s",
            calling,
            status_text(outcome.failure_code),
            outcome.reason,
            instance,
        )
    elif logged == LOGGED_REFUSALS:
        log.warning("C-STORE from %s: further refusals on this association are only counted", calling)


class Receiver:
    """What the wire layer calls for the associations the node accepts (see wire.Receiver)."""

    def __init__(self, ctx: NodeContext, *, echo: Callable[[object], int]) -> None:
        self._ctx = ctx
        self._echo = echo

    def stored(self, assoc, path: Path) -> tuple[int, str]:
        return store_received(self._ctx, assoc, path)

    def failed(self, assoc, sop_instance: str, error: str) -> tuple[int, str]:
        stats(assoc).count("failed")
        log.warning(
            "C-STORE of %s from %s refused %s: %s",
            sop_instance,
            assoc.requestor.ae_title,
            status_text(OUT_OF_RESOURCES),
            error,
        )
        return OUT_OF_RESOURCES, error_comment(error)

    def echo(self, assoc) -> int:
        return self._echo(assoc)


def handle_store(event, ctx: NodeContext) -> Dataset:
    """EVT_C_STORE: ingest the spooled data set; answer success only once it is durable."""
    status, comment = store_received(ctx, event.assoc, Path(event.dataset_path))
    rsp = Dataset()
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    return rsp
