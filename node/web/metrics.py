"""``GET /metrics`` (Prometheus text format), and which metrics operation an HTTP request is.

Behind the token like the API.  The figures are gathered in a worker thread:
the state gauges read the index (see node.metrics).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from .. import metrics

_SEARCH_RESOURCES = ("studies", "series", "instances")
_ZIP_PATHS = ("/api/create_studies_zip", "/api/get_studies_zip")
# The console's study download is a WADO-RS retrieve as a ZIP.
CONSOLE_STUDY_ZIP = "/console/studies/{study}/zip"


def operation(method: str, route_path: str) -> str | None:
    """The ``operation`` label of a request routed to *route_path* (a template), or None."""
    if route_path == CONSOLE_STUDY_ZIP:
        return "wado"
    if route_path.startswith("/dicom-web/"):
        if method == "POST":
            return "stow"
        if method in ("GET", "HEAD"):
            return "qido" if route_path.rsplit("/", 1)[-1] in _SEARCH_RESOURCES else "wado"
        return None
    if route_path.startswith("/accessions/") or route_path in _ZIP_PATHS:
        return "zip" if method in ("GET", "HEAD", "POST") else None
    return None


def observe_request(scope: Scope, seconds: float) -> None:
    """Record a finished HTTP request in the duration histogram when it is one of the operations."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return
    op = operation(scope["method"], path)
    if op is not None:
        metrics.observe(op, seconds)


async def scrape(request: Request) -> Response:
    ctx = request.app.state.ctx
    body, content_type = await run_in_threadpool(
        lambda: metrics.exposition(ctx, accept=request.headers.get("accept", ""))
    )
    return Response(body, headers={"Content-Type": content_type})


routes = [Route("/metrics", scrape, methods=["GET"])]
