"""One route per path, whatever module added each method: right ``Allow`` headers and ``OPTIONS``.

The doors add their routes separately (STOW's ``POST /dicom-web/studies``,
QIDO's ``GET`` on the same path, later DELETE on a study).  Starlette answers
a method a path does not serve from the first route whose path matches, so
``OPTIONS /dicom-web/studies`` said ``Allow: POST`` although GET is served
there.  :func:`by_path` folds the routes of one path into a
:class:`PathRoute`, which dispatches on the method, answers ``OPTIONS`` with
204 and the methods really served, and a method it does not serve with 405
naming them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send


def allow_header(methods: Iterable[str]) -> str:
    return ", ".join(sorted(set(methods) | {"OPTIONS"}))


def unserved_method(method: str, path: str, served: Iterable[str]) -> Response:
    """The answer to a method *path* does not serve: 204 for OPTIONS, else 405; both with ``Allow``."""
    allow = allow_header(served)
    if method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": allow})
    return JSONResponse(
        {"error": f"{method} is not served on {path} (allowed: {allow})"},
        status_code=405,
        headers={"Allow": allow},
    )


class PathRoute(Route):
    """The routes of one path template, dispatched by method."""

    def __init__(self, path: str, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self.by_method: dict[str, Route] = {}
        for route in self.routes:
            for method in route.methods or ():
                self.by_method.setdefault(method, route)
        first = self.routes[0]
        # OPTIONS is not among the methods: it matches partially and lands in handle() all the same
        # (no other route serves it), and ``methods`` stays the list of what the path really serves.
        super().__init__(path, first.endpoint, methods=list(self.by_method), name=first.name)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        route = self.by_method.get(method)
        if route is not None:
            await route.handle(scope, receive, send)
            return
        await unserved_method(method, scope["path"], self.by_method)(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any):
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                continue
        raise NoMatchFound(name, path_params)


def by_path(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """*routes* with every plain Route folded into one PathRoute per path (first appearance's place)."""
    grouped: dict[str, list[Route]] = {}
    out: list[BaseRoute | str] = []
    for route in routes:
        if type(route) is Route and route.methods:
            if route.path not in grouped:
                grouped[route.path] = []
                out.append(route.path)
            grouped[route.path].append(route)
        else:
            out.append(route)
    return [PathRoute(item, grouped[item]) if isinstance(item, str) else item for item in out]


def serves(routes: Iterable[BaseRoute], method: str, path: str) -> bool:
    """Whether a route among *routes* serves *method* on *path* (for features that depend on others)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "path_params": {}}
    return any(route.matches(scope)[0] is Match.FULL for route in routes)
