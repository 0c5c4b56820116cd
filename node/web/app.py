"""The Starlette application: routes of every HTTP door, behind the token check."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ..context import NodeContext
from . import delete, echo, export, health, qido, rendered, send, stow, wado
from . import forward as forward_routes
from . import jobs as jobs_routes
from . import remotes as remotes_routes
from .access_log import RequestLog
from .auth import BearerToken


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
    middleware = [Middleware(RequestLog)]
    if ctx.settings.http.token:
        middleware.append(Middleware(BearerToken, token=ctx.settings.http.token))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.ctx = ctx
    return app
