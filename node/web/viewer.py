"""``/viewer/``: the installed OHIF app, same origin as ``/dicom-web`` (no CORS needed).

OHIF is a single-page app: a path under /viewer/ that is not a file of it
(``/viewer/viewer?StudyInstanceUIDs=...``) gets its index.html and the app
routes itself.  A missing asset (a path with a file extension) stays 404, so
a broken install shows as such rather than as HTML parsed as a script.
Answers carry COOP/COEP, which OHIF needs for SharedArrayBuffer (its 3D
views).  Without an installed viewer, the page says how to install one.
The folder is looked up per request: an install while the node runs is
served at once.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import viewer
from .console.pages import render

ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
# Files whose name does not change between releases: always revalidate; the rest are content-hashed.
_REVALIDATE = {"index.html", "app-config.js", "init-service-worker.js", "manifest.json", viewer.MARKER}


class ViewerFiles:
    """ASGI app for the files under ``[http].viewer_path``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._file(request, request.path_params.get("path", ""))
        await response(scope, receive, send)

    async def _file(self, request: Request, relative: str) -> Response:
        if viewer.installed(self.folder) is None:
            return render(request, "viewer_missing.html", status=404, nav="viewer", path=self.folder)
        path = self._resolve(relative)
        if path is None:
            if "." in PurePosixPath(relative).name:
                return JSONResponse({"error": f"no file {relative!r} in the viewer"}, status_code=404)
            path = self.folder / "index.html"  # a route of the app
        headers = dict(ISOLATION)
        if path.name in _REVALIDATE:
            headers["Cache-Control"] = "no-cache"
        else:
            headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return FileResponse(path, headers=headers)

    def _resolve(self, relative: str) -> Path | None:
        """The file *relative* names inside the folder, or None (never a path outside it)."""
        root = self.folder.resolve()
        candidate = (root / relative.lstrip("/")).resolve()
        if candidate != root and root not in candidate.parents:
            return None
        if candidate.is_dir():
            candidate = candidate / "index.html"
        return candidate if candidate.is_file() else None


def routes(folder: Path) -> list[Route]:
    # A Route, not a Mount: it folds with the others (OPTIONS, 405 with Allow) and lists its methods.
    return [Route("/viewer/{path:path}", ViewerFiles(folder), methods=["GET", "HEAD"], name="viewer")]
