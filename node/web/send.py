"""``POST /remotes/{name}/store``: C-STORE stored studies, series or instances to a remote, as a job.

What to send is named by ``StudyInstanceUID``, ``SeriesInstanceUID`` and
``SOPInstanceUID`` in the query (repeated or comma-separated), or by a JSON
body with those keys (a UID or a list of UIDs each).  202 with the job
(``Location: /jobs/{id}``); 404 for an unknown remote; 400 when nothing is
named, a UID is malformed or not held by this node.
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..index.selection import Selection
from ..remotes.send_job import SendRequestError, queue_send
from .access_log import note
from .jobs import refuse

KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
MAX_BODY = 1024 * 1024


class _BadBody(ValueError):
    pass


def _from_query(request: Request) -> list[list[str]]:
    return [
        [u.strip() for raw in request.query_params.getlist(key) for u in raw.split(",") if u.strip()]
        for key in KEYS
    ]


def _from_body(body: bytes) -> list[list[str]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadBody(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadBody(f"the body must be a JSON object with {', '.join(KEYS)}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise _BadBody(f"unknown key {unknown[0]!r} in the body (known: {', '.join(KEYS)})")
    lists = []
    for key in KEYS:
        value = data.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _BadBody(f"{key} must be a UID or a list of UIDs")
        lists.append([v.strip() for v in value if v.strip()])
    return lists


async def store_to_remote(request: Request) -> Response:
    ctx = request.app.state.ctx
    name = request.path_params["name"]
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return refuse(request, 413, f"the body is larger than {MAX_BODY} bytes")
    try:
        studies, series, instances = _from_body(body) if body.strip() else _from_query(request)
    except _BadBody as exc:
        return refuse(request, 400, str(exc))
    wanted = Selection(
        tuple(dict.fromkeys(studies)), tuple(dict.fromkeys(series)), tuple(dict.fromkeys(instances))
    )
    runner = request.app.state.jobs
    try:
        job = await run_in_threadpool(queue_send, runner, ctx.settings, name, wanted)
    except SendRequestError as exc:
        return refuse(request, 404 if exc.unknown_remote else 400, str(exc))
    note(request, f"send job {job.id}: {job.total} instance(s) to {name}")
    return JSONResponse(runner.describe(job), status_code=202, headers={"Location": f"/jobs/{job.id}"})


routes = [Route("/remotes/{name}/store", store_to_remote, methods=["POST"])]
