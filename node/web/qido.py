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

from ..cache.query import ReadThrough
from ..dicomweb import accept, search
from .access_log import note
from .wado import dicomweb_base, error


def endpoint(resource: str):
    """The handler of ``GET .../{resource}``."""

    async def handle(request: Request) -> Response:
        try:
            accept.choose_json(request.headers.get("accept"))
            parsed = search.parse(resource, request.query_params.multi_items(), dict(request.path_params))
            read_through = ReadThrough.from_settings(request.app.state.ctx.settings)
            found = await run_in_threadpool(search.answer, parsed, read_through)
        except accept.NotAcceptable as exc:
            return error(406, str(exc))
        except search.SearchError as exc:
            note(request, str(exc))
            return error(400, str(exc))
        # PS3.18 8.3.4.4 / RFC 7234 5.5: one Warning header, its warnings comma-separated.
        warnings = []
        if found.truncated:
            note(request, f"truncated at the limit of {parsed.limit}")
            warnings.append(
                f'299 {request.url.hostname} "There are more matches than the limit of {parsed.limit}:'
                ' ask again with a larger offset"'
            )
        if found.shortfalls:
            names = ", ".join(s.remote for s in found.shortfalls)
            note(request, "partial: " + "; ".join(str(s) for s in found.shortfalls))
            warnings.append(
                f'299 {request.url.hostname} "Partial answer: the read-through remote(s) {names}'
                f' did not answer ({_quoted("; ".join(str(s) for s in found.shortfalls))})"'
            )
        headers = {"Warning": ", ".join(warnings)} if warnings else {}
        body = search.encode(found.matches, parsed.level, dicomweb_base(request))
        return StreamingResponse(body, media_type=accept.DICOM_JSON, headers=headers)

    return handle


def _quoted(text: str) -> str:
    """*text* safe inside an HTTP quoted-string (no quotes, backslashes or control characters)."""
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "'" for c in text)[:300]


routes = [
    Route("/dicom-web/studies", endpoint("studies"), methods=["GET"]),
    Route("/dicom-web/series", endpoint("series"), methods=["GET"]),
    Route("/dicom-web/instances", endpoint("instances"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/series", endpoint("series"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/instances", endpoint("instances"), methods=["GET"]),
    Route("/dicom-web/studies/{study}/series/{series}/instances", endpoint("instances"), methods=["GET"]),
]
