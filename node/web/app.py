"""The Starlette application: routes of every HTTP door, behind the token check.

Middleware, outermost first: the request log (and the HTTP metrics), CORS
when ``[http].cors_origins`` is set, the JSON answer for a crash (inside
CORS, so it carries the headers), then the token check.  Every path is one
route whatever modules serve its methods (node.web.routing), so OPTIONS and
405 answers name the methods really served.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from .. import metrics
from ..context import NodeContext
from . import console, cors, delete, echo, export, health, qido, rendered, send, stow, viewer, wado
from . import forward as forward_routes
from . import jobs as jobs_routes
from . import metrics as metrics_routes
from . import remotes as remotes_routes
from .access_log import RequestLog
from .auth import TokenAuth
from .errors import InternalErrorAnswer
from .routing import by_path, serves


def create_app(ctx: NodeContext) -> Starlette:
    """The ASGI app serving *ctx*."""
    routes = [*health.routes, *stow.routes, *qido.routes, *wado.routes, *export.routes]
    routes += delete.routes
    routes += rendered.routes
    routes += remotes_routes.routes
    routes += echo.routes
    routes += send.routes
    routes += jobs_routes.routes
    routes += forward_routes.routes
    routes += metrics_routes.routes
    routes += console.routes
    routes += viewer.routes(ctx.settings.http.viewer_path)
    routes = by_path(routes)

    middleware = [Middleware(RequestLog)]
    cors_middleware = cors.middleware(ctx.settings.http)
    if cors_middleware is not None:
        middleware.append(cors_middleware)
    middleware.append(Middleware(InternalErrorAnswer))
    if ctx.settings.http.token:
        middleware.append(Middleware(TokenAuth, token=ctx.settings.http.token))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.ctx = ctx
    app.state.console_templates = console.templates()
    app.state.console_features = console.Features(
        delete=serves(routes, "DELETE", "/dicom-web/studies/1.2"),
        echo=serves(routes, "POST", "/remotes/x/echo"),
        store=serves(routes, "POST", "/remotes/x/store"),
        jobs=serves(routes, "GET", "/jobs"),
        study_thumbnail=serves(routes, "GET", "/dicom-web/studies/1.2/thumbnail"),
        series_thumbnail=serves(routes, "GET", "/dicom-web/studies/1.2/series/1.3/thumbnail"),
    )
    metrics.prepare([r.name for r in ctx.settings.remotes if r.forward])
    return app
