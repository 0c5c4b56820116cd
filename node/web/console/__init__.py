"""The web console at ``/``: Starlette routes, Jinja2 templates and static files shipped in this package.

No build step and nothing loaded from elsewhere: the templates render on
the server, ``static/`` holds the style sheet, the icons and a little plain
JavaScript for the buttons (which call the node's own HTTP API).
"""

from __future__ import annotations

import jinja2
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from .format import FILTERS
from .pages import (
    Features,
    jobs,
    login,
    logout,
    remotes,
    status,
    studies,
    study,
    study_zip,
    upload,
)

__all__ = ["Features", "routes", "templates"]


def templates() -> Jinja2Templates:
    """The console's template set (read from the installed package, so it works outside a checkout)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("node.web.console", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return Jinja2Templates(env=env)


class _Static:
    """The package's static/ folder behind a plain Route (StaticFiles reads the path below its mount)."""

    def __init__(self) -> None:
        self.files = StaticFiles(packages=[("node.web.console", "static")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = dict(scope, path="/" + scope["path_params"]["path"], root_path="")
        await self.files(inner, receive, send)


routes = [
    Route("/", studies, methods=["GET"], name="studies"),
    Route("/console/studies/{study}", study, methods=["GET"], name="study"),
    Route("/console/studies/{study}/zip", study_zip, methods=["GET"], name="study_zip"),
    Route("/console/upload", upload, methods=["GET"], name="upload"),
    Route("/console/remotes", remotes, methods=["GET"], name="remotes"),
    Route("/console/jobs", jobs, methods=["GET"], name="jobs"),
    Route("/console/status", status, methods=["GET"], name="status"),
    Route("/console/login", login, methods=["GET", "POST"], name="login"),
    Route("/console/logout", logout, methods=["GET"], name="logout"),
    Route("/console/static/{path:path}", _Static(), methods=["GET", "HEAD"], name="static"),
]
