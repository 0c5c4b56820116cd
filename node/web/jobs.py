"""``/jobs``: every job of every kind, in one public form (node/jobs/public.py).

- ``GET /jobs?kind=&state=&limit=&offset=``: newest first; ``kind`` and
  ``state`` take one value, several comma-separated, or repeat; ``limit``
  1..1000 (default 100).  ``{"jobs": [...], "total", "limit", "offset"}``.
- ``GET /jobs/{id}``: one job; 404 for an unknown id.
- ``POST /jobs/{id}/cancel``: a queued or running job stops (200 with the
  job); 409 when it has ended, or for a forward job (it runs as long as its
  remote has ``forward = true``).
- ``POST /jobs/{id}/retry``: a failed or cancelled job is queued again and
  resumes where it stopped (202); 409 otherwise.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..index import jobs
from ..index.jobs import ACTIVE_STATES, STATES
from ..jobs.runner import JobRunner
from ..remotes.forwarder import KIND as FORWARD
from .access_log import note
from .wado import error

MAX_LIMIT = 1000


class _BadQuery(ValueError):
    pass


def _runner(request: Request) -> JobRunner:
    return request.app.state.jobs


def _values(request: Request, name: str) -> list[str]:
    return [v for raw in request.query_params.getlist(name) for v in raw.split(",") if v]


def _number(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _BadQuery(f"{name} must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def refuse(request: Request, status: int, message: str) -> JSONResponse:
    """A JSON error answer, its reason in the request's log line."""
    note(request, message)
    return error(status, message)


async def list_jobs(request: Request) -> Response:
    try:
        kinds = _values(request, "kind")
        states = _values(request, "state")
        wrong = [s for s in states if s not in STATES]
        if wrong:
            raise _BadQuery(f"unknown state {wrong[0]!r} (known: {', '.join(STATES)})")
        limit = _number(request, "limit", 100, 1, MAX_LIMIT)
        offset = _number(request, "offset", 0, 0, 2**62)
    except _BadQuery as exc:
        return refuse(request, 400, str(exc))
    runner = _runner(request)

    def page() -> dict:
        rows, total = jobs.listing(kinds, states, limit, offset)
        return {"jobs": [runner.describe(j) for j in rows], "total": total, "limit": limit, "offset": offset}

    body = await run_in_threadpool(page)
    note(request, f"{len(body['jobs'])} of {body['total']} job(s)")
    return JSONResponse(body)


async def _job(request: Request) -> jobs.Job | None:
    raw = request.path_params["id"]
    return await run_in_threadpool(jobs.get, int(raw)) if raw.isdigit() and len(raw) < 19 else None


def _unknown(request: Request) -> JSONResponse:
    return refuse(request, 404, f"no job with id {request.path_params['id']!r}")


async def get_job(request: Request) -> Response:
    job = await _job(request)
    if job is None:
        return _unknown(request)
    note(request, f"job {job.id} ({job.kind}) {job.state}")
    return JSONResponse(_runner(request).describe(job))


async def cancel_job(request: Request) -> Response:
    job = await _job(request)
    if job is None:
        return _unknown(request)
    if job.kind == FORWARD:
        return refuse(request, 409, "a forward job runs as long as its remote has forward = true")
    if job.state not in ACTIVE_STATES or not await run_in_threadpool(_runner(request).cancel, job.id):
        return refuse(request, 409, f"job {job.id} has already ended ({job.state})")
    note(request, f"job {job.id} ({job.kind}) cancelled")
    return JSONResponse(_runner(request).describe(await _job(request)))  # type: ignore[arg-type]


async def retry_job(request: Request) -> Response:
    job = await _job(request)
    if job is None:
        return _unknown(request)
    if not await run_in_threadpool(jobs.requeue, job.id):
        return refuse(request, 409, f"job {job.id} is {job.state}: only a failed or cancelled job is retried")
    runner = _runner(request)
    runner.wake()
    note(request, f"job {job.id} ({job.kind}) queued again")
    return JSONResponse(runner.describe(await _job(request)), status_code=202)  # type: ignore[arg-type]


routes = [
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/{id}", get_job, methods=["GET"]),
    Route("/jobs/{id}/cancel", cancel_job, methods=["POST"]),
    Route("/jobs/{id}/retry", retry_job, methods=["POST"]),
]
