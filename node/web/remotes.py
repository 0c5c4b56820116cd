"""``GET /remotes``: each configured remote and its store-and-forward queue.

``POST /remotes/{name}/retry`` re-queues the remote's failed rows (the
HTTP twin of ``dicom-node forward --retry NAME``).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..config import Remote
from ..index import outbox
from ..index.models import utcnow
from ..remotes.forward_admin import iso, remote_report
from ..remotes.forwarder import Forwarder


def _forwarder(request: Request) -> Forwarder | None:
    return getattr(request.app.state, "forwarder", None)


def _reports(remotes: tuple[Remote, ...], forwarder: Forwarder | None) -> list[dict[str, Any]]:
    return [remote_report(r, forwarder.status(r.name) if forwarder else None) for r in remotes]


async def list_remotes(request: Request) -> JSONResponse:
    ctx = request.app.state.ctx
    reports = await run_in_threadpool(_reports, ctx.settings.remotes, _forwarder(request))
    return JSONResponse({"remotes": reports, "now": iso(utcnow())})


def unknown_remote(settings, name: str) -> JSONResponse:
    """The 404 of a route naming a remote that is not configured."""
    known = ", ".join(r.name for r in settings.remotes) or "none configured"
    return JSONResponse({"error": f"no remote named {name!r} (known: {known})"}, status_code=404)


async def retry_remote(request: Request) -> JSONResponse:
    ctx = request.app.state.ctx
    name = request.path_params["name"]
    remote = ctx.settings.remote_by_name(name)
    if remote is None:
        return unknown_remote(ctx.settings, name)
    requeued = await run_in_threadpool(outbox.requeue_failed, remote.name)
    forwarder = _forwarder(request)
    if forwarder is not None:
        forwarder.wake(remote.name)
    return JSONResponse({"remote": remote.name, "requeued": requeued})


routes = [
    Route("/remotes", list_remotes, methods=["GET"]),
    Route("/remotes/{name}/retry", retry_remote, methods=["POST"]),
]
