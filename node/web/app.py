"""The Starlette application: routes of every HTTP door, behind the token check."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ..context import NodeContext
from . import health, stow
from .auth import BearerToken


def create_app(ctx: NodeContext) -> Starlette:
    """The ASGI app serving *ctx*."""
    routes = [*health.routes]
    routes += stow.routes
    middleware = []
    if ctx.settings.http.token:
        middleware.append(Middleware(BearerToken, token=ctx.settings.http.token))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.ctx = ctx
    return app
