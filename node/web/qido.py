"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Thin: parameters are parsed into a query of the one query engine
(node.dicomweb.search), run in a worker thread, and answered as
``application/dicom+json`` (200 with ``[]`` when nothing matches), streamed
from the database cursor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..dicomweb import accept, search
from .wado import dicomweb_base, error

log = logging.getLogger("node.web.qido")


def _logged(body: Iterator[bytes], request: Request, truncated: bool) -> Iterator[bytes]:
    """Pass *body* through and log the request's one line once it has been sent."""
    size = 0
    for chunk in body:
        size += len(chunk)
        yield chunk
    more = " (truncated by limit)" if truncated else ""
    log.info("qido %s?%s: %d bytes%s", request.url.path, request.url.query, size, more)


def endpoint(resource: str):
    """The handler of ``GET .../{resource}``."""

    async def handle(request: Request) -> Response:
        try:
            accept.choose_json(request.headers.get("accept"))
            parsed = search.parse(resource, request.query_params.multi_items(), dict(request.path_params))
            matches, truncated = await run_in_threadpool(search.run, parsed)
        except accept.NotAcceptable as exc:
            return error(406, str(exc))
        except search.SearchError as exc:
            log.info("qido %s?%s: 400 %s", request.url.path, request.url.query, exc)
            return error(400, str(exc))
        headers = {}
        if truncated:
            headers["Warning"] = (
                f'299 {request.url.hostname}: "There are more matches than the limit of {parsed.limit}:'
                ' ask again with a larger offset"'
            )
        body = search.encode(matches, parsed.level, dicomweb_base(request))
        logged = _logged(body, request, truncated)
        return StreamingResponse(logged, media_type=accept.DICOM_JSON, headers=headers)

    return handle


routes = [
    Route("/dicom-web/studies", endpoint("studies"), methods=["GET"]),
    Route("/dicom-web/series", endpoint("series"), methods=["GET"]),
    Route("/dicom-web/instances", endpoint("instances"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/series", endpoint("series"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/instances", endpoint("instances"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/series/{series}/instances", endpoint("instances"), methods=["GET"]),
]
