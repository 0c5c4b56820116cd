"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Thin: parameters are parsed into a query of the one query engine
(node.dicomweb.search), run in a worker thread, and answered as
``application/dicom+json`` (200 with ``[]`` when nothing matches), streamed
from the database cursor.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..dicomweb import accept, search
from .access_log import note
from .wado import dicomweb_base, error


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
            note(request, str(exc))
            return error(400, str(exc))
        headers = {}
        if truncated:
            note(request, f"truncated at the limit of {parsed.limit}")
            headers["Warning"] = (
                f'299 {request.url.hostname}: "There are more matches than the limit of {parsed.limit}:'
                ' ask again with a larger offset"'
            )
        body = search.encode(matches, parsed.level, dicomweb_base(request))
        return StreamingResponse(body, media_type=accept.DICOM_JSON, headers=headers)

    return handle


routes = [
    Route("/dicom-web/studies", endpoint("studies"), methods=["GET"]),
    Route("/dicom-web/series", endpoint("series"), methods=["GET"]),
    Route("/dicom-web/instances", endpoint("instances"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/series", endpoint("series"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/instances", endpoint("instances"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/series/{series}/instances", endpoint("instances"), methods=["GET"]),
]
