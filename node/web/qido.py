"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Thin: parameters are parsed into a query of the one query engine
(node.dicomweb.search), run in a worker thread, and answered as
``application/dicom+json`` (200 with ``[]`` when nothing matches).
"""

from __future__ import annotations

import json
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicomweb import accept, search
from .wado import dicomweb_base, error

log = logging.getLogger("node.web.qido")


def _answer(request: Request, resource: str) -> tuple[int, bytes, dict[str, str]]:
    """Parse, query and encode (runs in a worker thread)."""
    parsed = search.parse(resource, request.query_params.multi_items(), dict(request.path_params))
    matches, truncated = search.run(parsed)
    base = dicomweb_base(request)
    body = json.dumps([search.to_json(m, parsed.level, base) for m in matches], ensure_ascii=False)
    headers = {}
    if truncated:
        headers["Warning"] = (
            f'299 {request.url.hostname}: "There are more matches than the limit of {parsed.limit}:'
            ' ask again with a larger offset"'
        )
    return len(matches), body.encode(), headers


def endpoint(resource: str):
    """The handler of ``GET .../{resource}``."""

    async def handle(request: Request) -> Response:
        try:
            accept.choose_json(request.headers.get("accept"))
            count, body, headers = await run_in_threadpool(_answer, request, resource)
        except accept.NotAcceptable as exc:
            return error(406, str(exc))
        except search.SearchError as exc:
            log.info("qido %s?%s: 400 %s", request.url.path, request.url.query, exc)
            return error(400, str(exc))
        log.info("qido %s?%s: %d match(es)", request.url.path, request.url.query, count)
        return Response(body, media_type=accept.DICOM_JSON, headers=headers)

    return handle


routes = [
    Route("/dicom-web/studies", endpoint("studies"), methods=["GET"]),
    Route("/dicom-web/series", endpoint("series"), methods=["GET"]),
    Route("/dicom-web/instances", endpoint("instances"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/series", endpoint("series"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/instances", endpoint("instances"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/series/{series}/instances", endpoint("instances"), methods=["GET"]),
]
