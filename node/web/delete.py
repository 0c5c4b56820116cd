"""``DELETE /dicom-web/studies/{study}`` (and ``/series/{series}``, ``/instances/{instance}``).

204 once the rows are gone and the files removed (node/deletion.py: rows
first, then files, crash-safely); 404 JSON when the path names nothing
held, a series under another study included.  Like every route but
``/health``, it is behind ``[http].token`` when one is set.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import deletion
from ..index.deletion import locate
from .access_log import note
from .wado import INSTANCE, SERIES, STUDY, error


def _delete(ctx, study: str, series: str | None, instance: str | None):
    target = locate(study, series, instance)
    return None if target is None else deletion.delete(ctx, [target])


async def delete(request: Request) -> Response:
    p = request.path_params
    deleted = await run_in_threadpool(
        _delete, request.app.state.ctx, p["study"], p.get("series"), p.get("instance")
    )
    if deleted is None or not deleted.instances:
        level = "instance" if "instance" in p else "series" if "series" in p else "study"
        path = request.url.path.removeprefix("/dicom-web/")
        message = f"no such {level} here: {path}"
        note(request, message)
        return error(404, message)
    note(request, f"deleted {deletion.summary(deleted)}")
    return Response(status_code=204)


routes = [Route(path, delete, methods=["DELETE"]) for path in (STUDY, SERIES, INSTANCE)]
