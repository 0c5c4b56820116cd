"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data, streamed from the store.

Thin: each endpoint resolves the path in the index (node.dicomweb.instances),
negotiates the Accept header (node.dicomweb.accept) and streams what the
core modules read.  Files are read in a worker thread, chunk by chunk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import zipstream
from ..dicomweb import accept
from ..dicomweb.frames import FrameError, open_frames, parse_frame_list
from ..dicomweb.instances import NotFound, StoredInstance, find_instances
from ..dicomweb.metadata import BadTagPath, bulk_value, instance_metadata
from ..dicomweb.multipart_writer import (
    FilePart,
    body_length,
    content_type,
    new_boundary,
    stream_files,
    stream_parts,
)
from ..dicomweb.pixels import PIXEL_TAGS
from ..store import InstanceStore

log = logging.getLogger("node.web.wado")


def error(status: int, message: str) -> JSONResponse:
    """The JSON error body every DICOMweb endpoint answers with."""
    return JSONResponse({"error": message}, status_code=status)


def dicomweb_base(request: Request) -> str:
    """The absolute URL of /dicom-web as the client reached it.

    Some clients (dicomweb-client) send ``Host`` without the port; when that
    host is the address the request came in on (no proxy in between), the
    port it came in on is the one to put in the URLs handed back.
    """
    base = request.base_url
    server = request.scope.get("server")
    if base.port is None and server and base.hostname == server[0]:
        default = 443 if base.scheme == "https" else 80
        if server[1] != default:
            base = base.replace(port=server[1])
    return str(base).rstrip("/") + "/dicom-web"


def instance_url(base: str, inst: StoredInstance) -> str:
    return f"{base}/studies/{inst.study_uid}/series/{inst.series_uid}/instances/{inst.sop_uid}"


async def _lookup(request: Request) -> list[StoredInstance]:
    p = request.path_params
    return await run_in_threadpool(find_instances, p["study"], p.get("series"), p.get("instance"))


def _what(request: Request) -> str:
    p = request.path_params
    return "/".join(p[k] for k in ("study", "series", "instance") if k in p)


async def retrieve(request: Request) -> Response:
    """Study, series or instance as multipart/related application/dicom, or as a ZIP."""
    try:
        instances = await _lookup(request)
        form = accept.choose_instances(request.headers.get("accept"), {i.transfer_syntax for i in instances})
    except NotFound as exc:
        log.info("wado %s: 404 %s", _what(request), exc)
        return error(404, str(exc))
    except accept.NotAcceptable as exc:
        log.info("wado %s: 406 %s", _what(request), exc)
        return error(406, str(exc))
    store: InstanceStore = request.app.state.ctx.store
    log.info("wado %s: %d instance(s) as %s", _what(request), len(instances), form)
    if form == "zip":
        level = request.app.state.ctx.settings.export.compression
        entries = (
            (f"{i.study_uid}/{i.series_uid}/{i.sop_uid}.dcm", store.absolute(i.path), i.size)
            for i in instances
        )
        name = instances[0].sop_uid if "instance" in request.path_params else request.path_params["study"]
        return StreamingResponse(
            zipstream.iter_zip(entries, level),
            media_type=accept.ZIP,
            headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
        )
    boundary = new_boundary()
    parts = [
        FilePart(f"{accept.DICOM}; transfer-syntax={i.transfer_syntax}", i.size, partial(store.open, i.path))
        for i in instances
    ]
    # A known length spares the chunked framing (one copy less per chunk) and lets clients show progress.
    return StreamingResponse(
        stream_files(boundary, parts),
        media_type=content_type(accept.DICOM, boundary),
        headers={"Content-Length": str(body_length(boundary, parts))},
    )


def _metadata_body(store: InstanceStore, instances: list[StoredInstance], base: str) -> Iterator[bytes]:
    """A JSON array built one instance at a time (a large study never sits in memory whole)."""
    yield b"["
    for n, inst in enumerate(instances):
        item = instance_metadata(store.open(inst.path), instance_url(base, inst) + "/bulkdata")
        yield (b"," if n else b"") + json.dumps(item, ensure_ascii=False).encode()
    yield b"]"


async def metadata(request: Request) -> Response:
    """DICOM JSON of every instance at the level, bulk data as BulkDataURIs."""
    try:
        accept.choose_json(request.headers.get("accept"))
        instances = await _lookup(request)
    except NotFound as exc:
        log.info("wado metadata %s: 404 %s", _what(request), exc)
        return error(404, str(exc))
    except accept.NotAcceptable as exc:
        return error(406, str(exc))
    store: InstanceStore = request.app.state.ctx.store
    log.info("wado metadata %s: %d instance(s)", _what(request), len(instances))
    body = _metadata_body(store, instances, dicomweb_base(request))
    return StreamingResponse(body, media_type=accept.DICOM_JSON)


async def _frames_response(request: Request, numbers: list[int] | None, part_type: str | None) -> Response:
    """Frames *numbers* (None: all) of the instance in the path, as multipart/related."""
    try:
        (inst,) = await _lookup(request)
        if part_type is None:
            part_type = accept.choose_frames(request.headers.get("accept"), inst.transfer_syntax)
        store: InstanceStore = request.app.state.ctx.store
        reader = await run_in_threadpool(lambda: open_frames(store.open(inst.path)))
        if numbers is None:
            numbers = list(range(1, reader.count + 1))
        try:
            reader.check(numbers)
        except FrameError:
            reader.fp.close()
            raise
    except NotFound as exc:
        return error(404, str(exc))
    except accept.NotAcceptable as exc:
        return error(406, str(exc))
    except FrameError as exc:
        return error(exc.status, str(exc))
    log.info("wado frames %s: %d frame(s)", _what(request), len(numbers))
    boundary = new_boundary()
    body = stream_parts(boundary, ((part_type, frame) for frame in reader.frames(numbers)))
    return StreamingResponse(body, media_type=content_type(part_type.split(";")[0], boundary))


async def frames(request: Request) -> Response:
    """``.../frames/1,2,3``: the frames as stored (native bytes or compressed bitstreams)."""
    try:
        numbers = parse_frame_list(request.path_params["frames"])
    except FrameError as exc:
        return error(exc.status, str(exc))
    return await _frames_response(request, numbers, None)


async def bulkdata(request: Request) -> Response:
    """Resolve a BulkDataURI from the metadata: a bulk element's value, or all frames of the pixel data."""
    path = request.path_params["path"]
    if path.strip("/").upper() in {f"{t:08X}" for t in PIXEL_TAGS}:
        octets = f"{accept.OCTET_STREAM}"
        try:
            (inst,) = await _lookup(request)
        except NotFound as exc:
            return error(404, str(exc))
        return await _frames_response(request, None, f"{octets}; transfer-syntax={inst.transfer_syntax}")
    try:
        (inst,) = await _lookup(request)
        store: InstanceStore = request.app.state.ctx.store
        value = await run_in_threadpool(lambda: bulk_value(store.open(inst.path), path))
    except NotFound as exc:
        return error(404, str(exc))
    except BadTagPath as exc:
        return error(404, str(exc))
    log.info("wado bulkdata %s/%s: %d bytes", _what(request), path, len(value))
    boundary = new_boundary()
    body = stream_parts(boundary, [(accept.OCTET_STREAM, value)])
    return StreamingResponse(body, media_type=content_type(accept.OCTET_STREAM, boundary))


STUDY = "/dicom-web/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"

routes = [
    Route(STUDY, retrieve, methods=["GET"]),
    Route(SERIES, retrieve, methods=["GET"]),
    Route(INSTANCE, retrieve, methods=["GET"]),
    Route(STUDY + "/metadata", metadata, methods=["GET"]),
    Route(SERIES + "/metadata", metadata, methods=["GET"]),
    Route(INSTANCE + "/metadata", metadata, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}", frames, methods=["GET"]),
    Route(INSTANCE + "/bulkdata/{path:path}", bulkdata, methods=["GET"]),
]
