"""``POST /remotes/{name}/echo``: C-ECHO a configured remote, by its name.

200 JSON with ``round_trip_ms`` (C-ECHO request to response) and
``total_ms`` (with the association) when it answered success; 502 JSON
whose ``failure`` is ``unreachable``, ``timeout``, ``refused``, ``aborted``
or ``status`` and whose ``error`` says what happened; 404 for an unknown
name.  ``?timeout=`` (seconds, default 10, at most 60) bounds each step.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..remotes.echo import DEFAULT_TIMEOUT_S, echo
from .access_log import note
from .remotes import unknown_remote

MAX_TIMEOUT_S = 60.0


async def echo_remote(request: Request) -> JSONResponse:
    settings = request.app.state.ctx.settings
    name = request.path_params["name"]
    remote = settings.remote_by_name(name)
    if remote is None:
        return unknown_remote(settings, name)
    raw = request.query_params.get("timeout")
    try:
        timeout = DEFAULT_TIMEOUT_S if raw is None else float(raw)
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise ValueError
    except ValueError:
        message = f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}, got {raw!r}"
        return JSONResponse({"error": message}, status_code=400)
    result = await run_in_threadpool(echo, remote, settings.dicom.ae_title, timeout)
    note(request, str(result))
    return JSONResponse(result.as_json(), status_code=200 if result.ok else 502)


routes = [Route("/remotes/{name}/echo", echo_remote, methods=["POST"])]
