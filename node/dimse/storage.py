"""Storage SCP: C-STORE requests into the ingest path."""

from __future__ import annotations

from pydicom.dataset import Dataset

from ..context import NodeContext
from ..ingest import Source, ingest_file
from .associations import stats


def error_comment(reason: str) -> str:
    """*reason* as an ErrorComment: LO, at most 64 characters, no backslash or controls."""
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in reason)
    return cleaned[:64]


def handle_store(event, ctx: NodeContext) -> Dataset:
    """EVT_C_STORE: ingest the spooled data set; answer success only once it is durable."""
    calling = event.assoc.requestor.ae_title
    # An instance sent by a known remote (e.g. the answer to our C-MOVE) is
    # tagged with it, so that store-and-forward never sends it back there.
    remote = ctx.settings.remote_by_ae(calling)
    source = Source("dimse", calling_aet=calling, remote=remote.name if remote else "")
    outcome = ingest_file(ctx.store, event.dataset_path, source, take=True)
    status = Dataset()
    if outcome.ok:
        status.Status = 0x0000
        stats(event.assoc).count(outcome.status.value)
    else:
        status.Status = outcome.failure_code
        status.ErrorComment = error_comment(outcome.reason)
        stats(event.assoc).count("failed")
    return status
