"""``GET /health``: version, counts and uptime."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import __version__
from ..index import outbox
from ..index.figures import counts


async def health(request: Request) -> JSONResponse:
    ctx = request.app.state.ctx
    return JSONResponse(
        {
            "status": "ok",
            "version": __version__,
            "ae_title": ctx.settings.dicom.ae_title,
            "dicom_port": ctx.settings.dicom.port,
            "uptime_s": round(time.time() - ctx.started_at, 3),
            "counts": await run_in_threadpool(counts),
            "outbox": await run_in_threadpool(outbox.totals),
        }
    )


routes = [Route("/health", health, methods=["GET"])]
