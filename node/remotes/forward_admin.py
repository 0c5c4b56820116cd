"""Store-and-forward for operators: a remote's queue report and ``dicom-node forward``."""

from __future__ import annotations

import sys
from typing import Any

from ..config import Remote
from ..context import NodeContext
from ..index import outbox
from ..jobs.public import iso as _iso
from .forwarder import WorkerStatus, published_status


def iso(value) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with ``Z``, to the second; None stays None."""
    return _iso(value, "seconds")


def remote_report(remote: Remote, worker: WorkerStatus | None) -> dict[str, Any]:
    """One remote as ``GET /remotes`` shows it: settings, queue figures and worker state.

    *worker* is the status of the worker holding the remote's forward job
    (None when no process forwards to it); the rows supply what survives a
    restart.
    """
    figures = outbox.figures(remote.name)
    last_success = figures.last_success
    last_error, last_error_at = figures.last_error, figures.last_error_at
    next_retry = None
    if worker is not None:
        if worker.last_success and (last_success is None or worker.last_success > last_success):
            last_success = worker.last_success
        if worker.last_error_at and (last_error_at is None or worker.last_error_at >= last_error_at):
            last_error, last_error_at = worker.last_error, worker.last_error_at
        next_retry = worker.next_retry
    if next_retry is None and figures.pending:
        next_retry = outbox.next_due(remote.name)
    return {
        "name": remote.name,
        "ae_title": remote.ae_title,
        "host": remote.host,
        "port": remote.port,
        "forward": remote.forward,
        "retrieve": remote.retrieve,
        "accession_prefixes": list(remote.accession_prefixes),
        "pending": figures.pending,
        "failed": figures.failed,
        "forwarded": figures.done,
        "sending": bool(worker and worker.sending),
        "last_success": iso(last_success),
        "last_error": last_error or None,
        "last_error_at": iso(last_error_at),
        "next_retry": iso(next_retry),
    }


def run_forward(ctx: NodeContext, *, retry: str | None = None) -> int:
    """``dicom-node forward [--retry NAME]``: print each remote's queue, or re-queue failed rows."""
    settings = ctx.settings
    if retry is not None:
        remote = settings.remote_by_name(retry)
        if remote is None:
            known = ", ".join(r.name for r in settings.remotes) or "none configured"
            print(f"dicom-node: no remote named {retry!r} (known: {known})", file=sys.stderr)
            return 2
        count = outbox.requeue_failed(remote.name)
        note = "" if remote.forward else " (forward = false: a running node will not send them)"
        print(f"{count} failed instance(s) re-queued for {remote.name}{note}")
        return 0
    if not settings.remotes:
        print("no remotes configured")
    for remote in settings.remotes:
        r = remote_report(remote, published_status(remote.name) if remote.forward else None)
        print(
            f"{r['name']} ({r['ae_title']}@{r['host']}:{r['port']}, forward={str(r['forward']).lower()}): "
            f"{r['pending']} pending, {r['failed']} failed, {r['forwarded']} forwarded; "
            f"last success {r['last_success'] or '-'}; last error {r['last_error'] or '-'}"
        )
    return 0
