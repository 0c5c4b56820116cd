"""``GET /health``: status, version, counts, free space, the store's bounds and uptime.

``status`` is ``"degraded"`` (still HTTP 200: the node answers queries and
retrievals) while new data is refused: free space below
``[storage].min_free_bytes`` on the storage or the index, or an instance
refused within the last minute because a disk or the index was full;
``reason`` says which.
"""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import __version__
from ..context import NodeContext
from ..index import outbox
from ..index.eviction import evicted_count
from ..index.figures import counts, recent_store_totals

# How long an instance refused for want of space keeps the node "degraded".
RECENT_FULL_S = 60.0


def degraded_reason(ctx: NodeContext) -> str:
    """Why the node refuses new data right now, or ""."""
    refusal = ctx.space.refusal()
    if refusal:
        return refusal
    last = ctx.ingest.last_full
    if last is not None and time.monotonic() - last[0] < RECENT_FULL_S:
        return f"an instance was refused {time.monotonic() - last[0]:.0f} s ago: {last[1]}"
    return ""


def storage_figures(ctx: NodeContext) -> dict:
    """Bytes stored against ``[storage].max_bytes`` (0: unbounded) and the studies evicted so far."""
    s = ctx.settings.storage
    return {
        "bytes_used": recent_store_totals().bytes,
        "max_bytes": s.max_bytes,
        "max_age_days": s.max_age_days,
        "evicted_studies": evicted_count(),
    }


async def health(request: Request) -> JSONResponse:
    ctx: NodeContext = request.app.state.ctx
    reason = await run_in_threadpool(degraded_reason, ctx)
    return JSONResponse(
        {
            "status": "degraded" if reason else "ok",
            "reason": reason,
            "version": __version__,
            "ae_title": ctx.settings.dicom.ae_title,
            "dicom_port": ctx.settings.dicom.port,
            "uptime_s": round(time.time() - ctx.started_at, 3),
            "counts": await run_in_threadpool(counts),
            "space": await run_in_threadpool(ctx.space.status),
            "storage": await run_in_threadpool(storage_figures, ctx),
            "outbox": await run_in_threadpool(outbox.totals),
        }
    )


routes = [Route("/health", health, methods=["GET"])]
