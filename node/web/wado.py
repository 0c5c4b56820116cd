"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data, streamed from the store.

Thin: each endpoint resolves the path in the index (node.dicomweb.instances),
negotiates the Accept header (node.dicomweb.accept) and streams what the
core modules read.  Files are read in a worker thread, chunk by chunk.
Instances and frames the client cannot take as stored are converted by
node.transcode while they are sent, frame by frame.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import zipstream
from ..dicomweb import accept
from ..dicomweb.frames import FrameError, open_frames, parse_frame_list
from ..dicomweb.instances import NotFound, StoredInstance, find_retrieved
from ..dicomweb.metadata import BadTagPath, bulk_value, instance_metadata
from ..dicomweb.multipart_writer import (
    FilePart,
    GeneratedPart,
    body_length,
    content_type,
    new_boundary,
    stream_files,
    stream_parts,
)
from ..dicomweb.pixels import PIXEL_TAGS
from ..remotes import read_through
from ..remotes.read_through import ReadThrough
from ..store import InstanceStore
from ..transcode import Action, Conversion, FrameConverter, TranscodeError, open_conversion
from .access_log import note

log = logging.getLogger(__name__)


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


def _level(request: Request) -> tuple[str, str | None, str | None]:
    p = request.path_params
    return p["study"], p.get("series"), p.get("instance")


def _find_held(
    store: InstanceStore, read_through: ReadThrough | None, study: str, series: str | None, sop: str | None
) -> list[StoredInstance]:
    # A study whose retrieval runs (or failed) is not whole here: it is a miss, served by the
    # retrieval.  An instance held is whole (committed after its file), whatever the study's state.
    if sop is None and read_through is not None and read_through.pending(study) is not None:
        raise NotFound(f"study {study} is being retrieved")
    return find_retrieved(store, study, series, sop)  # noted as read: the bounded store's LRU order


async def _lookup(request: Request) -> list[StoredInstance]:
    ctx = request.app.state.ctx
    return await run_in_threadpool(_find_held, ctx.store, ctx.read_through, *_level(request))


def _read_through(request: Request) -> ReadThrough | None:
    """The node's read-through service when some remote is read-through, else None."""
    read_through = request.app.state.ctx.read_through
    return read_through if read_through is not None and read_through.enabled else None


def _miss_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a miss that could not be served at all (nothing was sent yet)."""
    note(request, str(exc))
    if isinstance(exc, NotFound):
        return error(404, str(exc))
    if isinstance(exc, read_through.Unavailable):
        return error(504 if exc.timeout else 502, str(exc))
    return error(502, str(exc))  # Incomplete before the first instance


async def _first_arrival(
    request: Request,
) -> tuple[read_through.Arrivals, Iterator[StoredInstance], StoredInstance]:
    """Join or start the retrieval of the path's study; wait for the first instance of the level.

    Raises NotFound, Unavailable or Incomplete (nothing can be sent yet).
    """
    service = _read_through(request)
    assert service is not None
    arrivals = await run_in_threadpool(service.open, *_level(request))
    stream = iter(arrivals)
    try:
        first = await run_in_threadpool(next, stream, None)
    except BaseException:
        arrivals.close()
        raise
    if first is None:  # cannot happen: an empty end raises; kept so a bug cannot serve nothing as success
        raise read_through.Unavailable(f"the retrieval of study {arrivals.level[0]} delivered nothing")
    return arrivals, stream, first


def _arriving(
    first: StoredInstance, stream: Iterator[StoredInstance], request: Request
) -> Iterator[StoredInstance]:
    """The instances as they arrive; a retrieval that ends short is logged, then cuts the response."""
    yield first
    try:
        yield from stream
    except (read_through.Incomplete, read_through.Unavailable, NotFound) as exc:
        log.warning(
            "WADO-RS %s: retrieval on a miss ended short; cutting the response: %s", request.url.path, exc
        )
        raise


def conversion_error(exc: TranscodeError) -> JSONResponse:
    """500 for stored data that cannot be decoded, 406 for a syntax the node cannot write it in."""
    return error(500 if exc.corrupt else 406, str(exc))


def _converted(
    store: InstanceStore, inst: StoredInstance, target: str, ready: Conversion | None
) -> Iterable[bytes]:
    """The instance's Part-10 bytes in *target* (*ready*: its conversion, prepared already)."""
    conversion = ready or open_conversion(store, inst.path, inst.transfer_syntax, target)
    try:
        yield from conversion.chunks()
    except TranscodeError:
        # Headers are sent: all that is left is to cut the body, which the client detects.
        log.exception("WADO-RS: aborting the response at instance %s", inst.sop_uid)
        raise


def _part(
    store: InstanceStore, inst: StoredInstance, plan, ready: Conversion | None
) -> FilePart | GeneratedPart:
    """One instance's part: the stored file, or its conversion (*ready*: prepared already)."""
    if plan.action is Action.AS_STORED:
        return FilePart(
            f"{accept.DICOM}; transfer-syntax={inst.transfer_syntax}",
            inst.size,
            partial(store.open, inst.path),
        )
    if plan.action is Action.CANNOT:
        raise TranscodeError(f"instance {inst.sop_uid} ({inst.transfer_syntax}) cannot be served as asked")
    return GeneratedPart(
        f"{accept.DICOM}; transfer-syntax={plan.syntax}", partial(_converted, store, inst, plan.syntax, ready)
    )


def _zip_entries(instances: Iterable[StoredInstance], store: InstanceStore):
    return (
        (f"{i.study_uid}/{i.series_uid}/{i.sop_uid}.dcm", store.absolute(i.path), i.size) for i in instances
    )


async def _retrieve_miss(request: Request) -> Response:
    """A study, series or instance not held: streamed from the retrieval as its instances arrive."""
    try:
        arrivals, stream, first = await _first_arrival(request)
    except (NotFound, read_through.Unavailable, read_through.Incomplete) as exc:
        return _miss_error(request, exc)
    try:
        choice = accept.choose_instances(request.headers.get("accept"), {first.transfer_syntax})
    except accept.NotAcceptable as exc:
        arrivals.close()
        note(request, str(exc))
        return error(406, str(exc))
    store: InstanceStore = request.app.state.ctx.store
    instances = _arriving(first, stream, request)
    note(request, f"not held: streamed as retrieved (job {arrivals.job_id}), as {choice.form}")
    if choice.form == "zip":
        level = request.app.state.ctx.settings.export.compression
        name = first.sop_uid if "instance" in request.path_params else request.path_params["study"]
        return StreamingResponse(
            zipstream.iter_zip(_zip_entries(instances, store), level),
            media_type=accept.ZIP,
            headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
        )
    boundary = new_boundary()
    parts = (_part(store, i, choice.plan(i.transfer_syntax), None) for i in instances)
    # No Content-Length (what will arrive is not known): chunked, so that a retrieval that
    # ends short leaves the body without its last chunk, which clients report as an error.
    return StreamingResponse(
        stream_files(boundary, parts, part_by_part=True), media_type=content_type(accept.DICOM, boundary)
    )


async def retrieve(request: Request) -> Response:
    """Study, series or instance as multipart/related application/dicom, or as a ZIP."""
    try:
        instances = await _lookup(request)
        choice = accept.choose_instances(
            request.headers.get("accept"), {i.transfer_syntax for i in instances}
        )
    except NotFound as exc:
        if _read_through(request) is not None:
            return await _retrieve_miss(request)
        note(request, str(exc))
        return error(404, str(exc))
    except accept.NotAcceptable as exc:
        note(request, str(exc))
        return error(406, str(exc))
    store: InstanceStore = request.app.state.ctx.store
    if choice.form == "zip":
        note(request, f"{len(instances)} instance(s) as zip")
        level = request.app.state.ctx.settings.export.compression
        entries = _zip_entries(instances, store)
        name = instances[0].sop_uid if "instance" in request.path_params else request.path_params["study"]
        return StreamingResponse(
            zipstream.iter_zip(entries, level),
            media_type=accept.ZIP,
            headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
        )
    plans = [(i, choice.plan(i.transfer_syntax)) for i in instances]
    converted = [(i, p.syntax) for i, p in plans if p.action is Action.TRANSCODE]
    ready: Conversion | None = None
    if converted:
        # The first conversion is prepared before answering, so that an instance the node cannot
        # convert gets a status and a message rather than a cut body.
        inst, target = converted[0]
        try:
            ready = await run_in_threadpool(open_conversion, store, inst.path, inst.transfer_syntax, target)
        except TranscodeError as exc:
            note(request, str(exc))
            return conversion_error(exc)
    targets = sorted({t for _, t in converted})
    note(
        request,
        f"{len(instances)} instance(s) as multipart"
        + (f", {len(converted)} transcoded to {', '.join(targets)}" if converted else ""),
    )
    boundary = new_boundary()
    parts = [_part(store, i, p, ready if converted and i is converted[0][0] else None) for i, p in plans]
    # A known length spares the chunked framing (one copy less per chunk) and lets clients show progress.
    length = body_length(boundary, parts)
    return StreamingResponse(
        stream_files(boundary, parts),
        media_type=content_type(accept.DICOM, boundary),
        headers={"Content-Length": str(length)} if length is not None else {},
    )


def _metadata_body(store: InstanceStore, instances: Iterable[StoredInstance], base: str) -> Iterator[bytes]:
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
        instances: Iterable[StoredInstance] = await _lookup(request)
        note(request, f"{len(instances)} instance(s)")  # type: ignore[arg-type]
    except NotFound as exc:
        if _read_through(request) is None:
            note(request, str(exc))
            return error(404, str(exc))
        try:
            arrivals, stream, first = await _first_arrival(request)
        except (NotFound, read_through.Unavailable, read_through.Incomplete) as exc:
            return _miss_error(request, exc)
        note(request, f"not held: streamed as retrieved (job {arrivals.job_id})")
        instances = _arriving(first, stream, request)
    except accept.NotAcceptable as exc:
        return error(406, str(exc))
    store: InstanceStore = request.app.state.ctx.store
    body = _metadata_body(store, instances, dicomweb_base(request))
    return StreamingResponse(body, media_type=accept.DICOM_JSON)


async def _frames_response(
    request: Request, numbers: list[int] | None, choice: accept.FrameChoice | None
) -> Response:
    """Frames *numbers* (None: all) of the instance in the path, as multipart/related."""
    try:
        (inst,) = await _lookup(request)
        if choice is None:
            choice = accept.choose_frames(request.headers.get("accept"), inst.transfer_syntax)
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
        note(request, str(exc))
        return error(406, str(exc))
    except FrameError as exc:
        return error(exc.status, str(exc))
    frames: Iterable[bytes] = reader.frames(numbers)
    if choice.transcode:
        try:
            converter = FrameConverter(
                reader.header,
                reader.pixel_vr,
                inst.transfer_syntax,
                choice.syntax,
                label=f"instance {inst.sop_uid}",
            )
            frames = await run_in_threadpool(converter.stream, numbers, reader.frames(numbers))
        except TranscodeError as exc:
            reader.fp.close()
            note(request, str(exc))
            return conversion_error(exc)
    note(
        request, f"{len(numbers)} frame(s)" + (f", transcoded to {choice.syntax}" if choice.transcode else "")
    )
    boundary = new_boundary()
    body = stream_parts(boundary, ((choice.content_type, frame) for frame in frames))
    return StreamingResponse(body, media_type=content_type(choice.media_type, boundary))


async def held_instance(request: Request) -> Response | None:
    """Make sure the path's instance is held (retrieving it on a miss); an error answer, or None.

    For the instance-level resources that read one stored file (frames, bulk
    data, rendered): the study's retrieval goes on after that instance is in.
    """
    try:
        await _lookup(request)
        return None
    except NotFound as exc:
        if _read_through(request) is None:
            return error(404, str(exc))
    try:
        arrivals, _stream, _first = await _first_arrival(request)
    except (NotFound, read_through.Unavailable, read_through.Incomplete) as exc:
        return _miss_error(request, exc)
    arrivals.close()  # it is held now; the rest of the study goes on arriving
    return None


async def frames(request: Request) -> Response:
    """``.../frames/1,2,3``: the frames as stored (native bytes or compressed bitstreams)."""
    try:
        numbers = parse_frame_list(request.path_params["frames"])
    except FrameError as exc:
        return error(exc.status, str(exc))
    if (refusal := await held_instance(request)) is not None:
        return refusal
    return await _frames_response(request, numbers, None)


async def bulkdata(request: Request) -> Response:
    """Resolve a BulkDataURI from the metadata: a bulk element's value, or all frames of the pixel data."""
    path = request.path_params["path"]
    if (refusal := await held_instance(request)) is not None:
        return refusal
    if path.strip("/").upper() in {f"{t:08X}" for t in PIXEL_TAGS}:
        try:
            (inst,) = await _lookup(request)
        except NotFound as exc:
            return error(404, str(exc))
        as_stored = accept.FrameChoice(accept.OCTET_STREAM, inst.transfer_syntax)
        return await _frames_response(request, None, as_stored)
    try:
        (inst,) = await _lookup(request)
        store: InstanceStore = request.app.state.ctx.store
        value = await run_in_threadpool(lambda: bulk_value(store.open(inst.path), path))
    except NotFound as exc:
        return error(404, str(exc))
    except BadTagPath as exc:
        return error(404, str(exc))
    note(request, f"bulk data {path}: {len(value)} bytes")
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
