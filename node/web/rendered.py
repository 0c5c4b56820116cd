"""WADO-RS rendered resources (PS3.18 10.4.1.1.3, 8.3.5): ``/rendered`` and ``/thumbnail`` as JPEG or PNG.

Thin: the index names the instance (for a study or series thumbnail, the
middle image of its first image series), node.dicomweb.frames reads the one
frame, node.transcode.render decodes and renders it in a worker thread.  An
instance not held is retrieved from a read-through upstream first (as its
frames would be); a thumbnail of something not held is a 404.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicomweb import accept
from ..dicomweb.frames import FrameError, open_frames, parse_frame_list
from ..dicomweb.instances import NotFound, StoredInstance, find_instances, find_retrieved, representative
from ..store import InstanceStore
from ..transcode.codec import CodecError, PixelFormat
from ..transcode.render import (
    MEDIA_TYPES,
    THUMBNAIL_VIEWPORT,
    RenderError,
    RenderOptions,
    RenderUnsupported,
    parse_options,
    render_frame,
)
from .access_log import note
from .wado import INSTANCE, SERIES, STUDY, error, held_instance

log = logging.getLogger(__name__)


def choose_media_type(header: str | None) -> str:
    """image/jpeg or image/png for an Accept header (JPEG for ``*/*``, ``image/*``); raises NotAcceptable."""
    for r in accept.parse_accept(header):
        for media in MEDIA_TYPES:
            if r.media_type in ("*/*", "image/*", media):
                return media
    raise accept.NotAcceptable(
        f"cannot satisfy Accept {header!r}: rendered images are {' or '.join(MEDIA_TYPES)}"
    )


def _render(store: InstanceStore, inst: StoredInstance, number: int | None, options: RenderOptions) -> bytes:
    """Frame *number* (None: the middle frame) of *inst*, rendered; raises FrameError, CodecError."""
    reader = open_frames(store.open(inst.path))
    with reader.fp:
        if number is None:
            number = (reader.count + 1) // 2
        reader.check([number])
        assert reader.header is not None
        fmt = PixelFormat.of(reader.header, reader.pixel_vr)
        return render_frame(reader.frame(number), reader.header, fmt, reader.syntax, number - 1, options)


async def _respond(
    request: Request, inst: StoredInstance, number: int | None, options: RenderOptions
) -> Response:
    store: InstanceStore = request.app.state.ctx.store
    try:
        body = await run_in_threadpool(_render, store, inst, number, options)
    except FrameError as exc:
        note(request, str(exc))
        # No pixel data: nothing the node can render in an image media type.
        return error(406 if exc.status == 404 and "no pixel data" in str(exc) else exc.status, str(exc))
    except RenderError as exc:
        return error(400, str(exc))
    except RenderUnsupported as exc:
        return error(406, f"instance {inst.sop_uid}: {exc}")
    except CodecError as exc:
        # Stored data the decoder rejects: the store's problem, not the request's.
        message = f"instance {inst.sop_uid}: cannot render: {exc}"
        note(request, message)
        log.warning("%s", message)
        return error(500, message)
    note(request, f"rendered {inst.sop_uid} as {options.media_type}, {len(body)} bytes")
    return Response(body, media_type=options.media_type, headers={"Cache-Control": "private, max-age=3600"})


async def _options(request: Request, viewport: tuple[int, int] | None = None) -> RenderOptions:
    media = choose_media_type(request.headers.get("accept"))
    return parse_options(request.query_params, media, viewport=viewport)


async def rendered(request: Request) -> Response:
    """``.../instances/{i}/rendered`` (the first frame) and ``.../frames/{n}/rendered`` (one frame)."""
    try:
        options = await _options(request)
        number = 1
        if "frames" in request.path_params:
            numbers = parse_frame_list(request.path_params["frames"])
            if len(numbers) != 1:
                raise FrameError("a rendered frame is one frame: ask for one number")
            number = numbers[0]
        # Not held: retrieved from a read-through upstream, as for the instance's frames.
        if (refusal := await held_instance(request)) is not None:
            return refusal
        p = request.path_params
        store = request.app.state.ctx.store
        (inst,) = await run_in_threadpool(find_retrieved, store, p["study"], p["series"], p["instance"])
    except accept.NotAcceptable as exc:
        return error(406, str(exc))
    except (RenderError, FrameError) as exc:
        return error(getattr(exc, "status", 400), str(exc))
    except NotFound as exc:
        return error(404, str(exc))
    return await _respond(request, inst, number, options)


async def thumbnail(request: Request) -> Response:
    """A small rendering of a study, series or instance (default viewport 128x128, aspect kept)."""
    p = request.path_params
    try:
        options = await _options(request, THUMBNAIL_VIEWPORT)
        # Not a read for the bounded store, and never a retrieval on a miss: a study
        # list shows every study's thumbnail, upstream-only ones included.
        instances = await run_in_threadpool(find_instances, p["study"], p.get("series"), p.get("instance"))
    except accept.NotAcceptable as exc:
        return error(406, str(exc))
    except RenderError as exc:
        return error(400, str(exc))
    except NotFound as exc:
        return error(404, str(exc))
    inst = representative(instances)
    if inst is None:
        return error(406, "nothing to show: no instance here has pixel data")
    return await _respond(request, inst, None, options)


routes = [
    Route(INSTANCE + "/rendered", rendered, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}/rendered", rendered, methods=["GET"]),
    Route(STUDY + "/thumbnail", thumbnail, methods=["GET"]),
    Route(SERIES + "/thumbnail", thumbnail, methods=["GET"]),
    Route(INSTANCE + "/thumbnail", thumbnail, methods=["GET"]),
]
