"""ZIP export routes: ``/accessions/{accession}/zip`` and the Medialog aliases.

- ``POST /accessions/{accession}/zip``, ``/api/create_studies_zip?AccessionNumber=``:
  200 JSON job when the archive is ready, 202 JSON job while it is prepared,
  404 JSON when no study has that accession number.
- ``GET /accessions/{accession}/zip``, ``/api/get_studies_zip?AccessionNumber=``:
  200 ``application/zip`` (with Content-Length, Content-Disposition and
  range requests) when ready, 202 JSON job while prepared, 404 JSON when
  nothing was prepared.
- A failed job answers 502 (the remote was down, refused, or sent too few
  instances) or 500, with the job (its ``message`` says what happened).
- A bad accession number answers 400 naming the problem.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..export.accession import InvalidAccession
from ..export.service import Answer, Kind
from ..index.jobs import INTERNAL

log = logging.getLogger("node.web.export")


def _respond(request: Request, answer: Answer, *, download: bool) -> Response:
    if answer.kind is Kind.READY:
        if download:
            return FileResponse(
                answer.path,
                media_type="application/zip",
                filename=answer.download_name,
                content_disposition_type="attachment",
            )
        return JSONResponse(answer.job, status_code=200)
    if answer.kind is Kind.PENDING:
        return JSONResponse(answer.job, status_code=202, headers={"Location": answer.job["url"]})
    if answer.kind is Kind.NOT_FOUND:
        return JSONResponse({"error": answer.message, "accession": answer.accession}, status_code=404)
    job = answer.job or {}
    status = 500 if job.get("failure") == INTERNAL else 502
    return JSONResponse({"error": answer.message, **job}, status_code=status)


async def _handle(request: Request, raw: str | None, *, download: bool) -> Response:
    service = request.app.state.exports
    operation = service.fetch if download else service.request
    try:
        answer = await run_in_threadpool(operation, raw)
    except InvalidAccession as exc:
        log.info("%s %s: 400 %s", request.method, request.url.path, exc)
        return JSONResponse({"error": str(exc), "accession": raw}, status_code=400)
    response = _respond(request, answer, download=download)
    log.info(
        "%s %s accession %r: %d %s",
        request.method,
        request.url.path,
        answer.accession,
        response.status_code,
        (answer.job or {}).get("state", answer.kind.value),
    )
    return response


async def post_zip(request: Request) -> Response:
    return await _handle(request, request.path_params["accession"], download=False)


async def get_zip(request: Request) -> Response:
    return await _handle(request, request.path_params["accession"], download=True)


async def create_studies_zip(request: Request) -> Response:
    return await _handle(request, request.query_params.get("AccessionNumber"), download=False)


async def get_studies_zip(request: Request) -> Response:
    return await _handle(request, request.query_params.get("AccessionNumber"), download=True)


class _AnyText(Convertor):
    """Any path text, "/" and control characters included (``:path`` stops at a newline).

    So that an accession with an encoded "/" (%2F) or control character
    reaches validation and gets its 400, instead of falling through to a 404.
    """

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("export_accession", _AnyText())

routes = [
    Route("/accessions/{accession:export_accession}/zip", post_zip, methods=["POST"]),
    Route("/accessions/{accession:export_accession}/zip", get_zip, methods=["GET"]),
    Route("/api/create_studies_zip", create_studies_zip, methods=["GET", "POST"]),
    Route("/api/get_studies_zip", get_studies_zip, methods=["GET"]),
]
