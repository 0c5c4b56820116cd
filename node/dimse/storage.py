"""Storage SCP: received C-STORE data sets into the ingest path.

Normally :mod:`node.dimse.fast_store` takes the C-STORE-RQs of associations
our server accepts; pynetdicom's EVT_C_STORE (``handle_store``) remains for
anything that reaches pynetdicom's own storage service.  Both call
:func:`store_received`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom.dataset import Dataset

from .. import metrics
from ..context import NodeContext
from ..ingest import Source
from ..statuses import status_text
from . import fast_store
from .associations import stats

log = logging.getLogger("node.dimse")

LOGGED_REFUSALS = 10  # refusals logged one by one per association


def error_comment(reason: str) -> str:
    """*reason* as an ErrorComment: LO, at most 64 characters, no backslash or controls."""
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in reason)
    return cleaned[:64]


@metrics.timed("c_store")
def store_received(ctx: NodeContext, assoc, path: Path) -> tuple[int, str]:
    """Ingest a spooled Part-10 file received on *assoc*; return (DIMSE status, ErrorComment)."""
    calling = assoc.requestor.ae_title
    # An instance sent by a known remote (e.g. the answer to our C-MOVE) is
    # tagged with it, so that store-and-forward never sends it back there.
    remote = ctx.settings.remote_by_ae(calling)
    source = Source("dimse", calling_aet=calling, remote=remote.name if remote else "")
    outcome = ctx.ingest.ingest_file(path, source, take=True)
    if outcome.ok:
        stats(assoc).count(outcome.status.value)
        return 0x0000, ""
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


def handle_store(event, ctx: NodeContext) -> Dataset:
    """EVT_C_STORE: ingest the spooled data set; answer success only once it is durable."""
    status, comment = store_received(ctx, event.assoc, Path(event.dataset_path))
    rsp = Dataset()
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    return rsp


def handle_conn_open(event, ctx: NodeContext) -> None:
    """EVT_CONN_OPEN: put the association's C-STOREs on the fast path."""
    fast_store.enable(event.assoc, lambda assoc, path: store_received(ctx, assoc, path), ctx.store.temp_path)


def handle_conn_close(event) -> None:
    """EVT_CONN_CLOSE: an instance cut off mid-transfer leaves no temp file behind."""
    fast_store.discard(event.assoc)
