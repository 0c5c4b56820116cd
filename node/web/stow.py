"""STOW-RS: ``POST /dicom-web/studies[/{study}]``, and the receiving code the gateway reuses.

Reusable API (the POSTCSTORE gateway route calls these two):

``await receive(request, study_uid, source=None) -> StowResult``
    Checks the Content-Type (``multipart/related`` with ``type``
    ``application/dicom``, ``application/dicom+json`` or
    ``application/dicom+xml``; a bare ``application/dicom`` body is taken as
    one part), streams the whole body to temp files (gzip/deflate undone),
    and only then builds and ingests every instance through
    :func:`node.ingest.ingest_file`.  Returns a :class:`StowResult`: one
    :class:`InstanceResult` per instance or failed part (the ingest
    ``Outcome``, the store-relative ``path`` of a stored instance, warnings,
    the part number).  Raises :class:`StowError` (``.status`` 400 / 413 /
    415, ``.message``) before anything is stored when the request itself is
    wrong; nothing from such a request is left behind.

``stow_response(result, base_url, status_override=None, extra_failures=()) -> Response``
    The PS3.18 Store Instances Response (``application/dicom+json``):
    RetrieveURL, ReferencedSOPSequence (with RetrieveURL and WarningReason),
    FailedSOPSequence (FailureReason, plus an ErrorComment naming the
    problem).  ``extra_failures`` (InstanceResults with a failed Outcome)
    are listed as failed and dropped from the referenced ones, e.g. stored
    here but refused by the PACS they were forwarded to.  The status is
    ``result.status_code()`` unless overridden: 200 all stored, 202 some
    stored (or stored with warnings), 409 none stored, 507 none stored because
    the storage or the index is full (every failure 0xA7xx), 204 no part.

``error_response(exc: StowError) -> Response`` renders the refusal.

No body makes a 500: every metadata or value problem is a per-instance
failure (409 when none is stored) or a 400 naming it; a full disk is 507
(``[storage].min_free_bytes`` is checked before the body is read, and a disk
that fills while the body is spooled stops it and removes the spool).

Failure reasons: 0xC000 part not DICOM or not a whole data set, 0xA900 data
set / UID problem (also: SOP Instance UID already held in another study, ErrorComment naming it),
0xC409 Study Instance UID differs from the URL, 0xC901 metadata not
parseable, 0xC902 bulk data missing, 0xC122 bulk data of an unsupported
kind (dcm4chee uses the same 0xC4xx/0xC9xx codes), 0x0110 / 0xA700 storage
failures.  WarningReason 0xB000: a value in the metadata was corrected
from the bulk data (e.g. Rows from the JPEG header).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..context import NodeContext
from ..dicomweb.encapsulate import BuildError, Bulk, build_instance
from ..dicomweb.json_model import MetadataError, dataset_from_json, load_json
from ..dicomweb.xml_model import load_xml
from ..index.faults import is_full
from ..ingest import (
    Outcome,
    Rejected,
    Source,
    Status,
    read_header,
)
from ..statuses import (
    CANNOT_UNDERSTAND,
    METADATA_NOT_PARSEABLE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    STUDY_UID_MISMATCH,
    is_out_of_resources,
    status_text,
)
from ..uids import valid_uid
from .access_log import note
from .multipart import BodyError, BodySpooler, Part, parse_media_type

StowError = BodyError
log = logging.getLogger(__name__)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
SUPPORTED_TYPES = (DICOM, DICOM_JSON, DICOM_XML)

# Metadata parts are parsed in memory; bulk data in sequences is loaded too.
MAX_METADATA_BYTES = 64 * 1024 * 1024
MAX_NESTED_BULK_BYTES = 16 * 1024 * 1024
# Body bytes handed to the parsing thread at a time.
FEED_BATCH = 1024 * 1024
# Threads that flush spooled parts to disk while the body is still arriving.
FLUSH_WORKERS = 4
# Threads that build and ingest instances.  fsync and the index commit release
# the GIL, so more than one pays; but every ingest takes the index's write lock
# (waiters sleep in SQLite's busy handler), so not many more than the cores.
# Measured on 2 cores against Orthanc: 2 workers beat 1 and 4.
INGEST_WORKERS = max(2, min(4, os.cpu_count() or 2))

_pools: dict[str, ThreadPoolExecutor] = {}
_pool_lock = threading.Lock()


def _executor(name: str = "flush") -> ThreadPoolExecutor:
    with _pool_lock:
        if name not in _pools:
            workers = FLUSH_WORKERS if name == "flush" else INGEST_WORKERS
            _pools[name] = ThreadPoolExecutor(workers, thread_name_prefix=f"stow-{name}")
        return _pools[name]


@dataclass
class InstanceResult:
    """What became of one instance (or of one part that held none)."""

    outcome: Outcome
    path: str | None = None  # store-relative path when stored
    warnings: tuple[int, ...] = ()
    part: int | None = None  # 1-based number of the body part it came from

    @property
    def ok(self) -> bool:
        return self.outcome.ok


@dataclass
class StowResult:
    """Every instance of one request, in body order."""

    study_uid: str | None
    instances: list[InstanceResult] = field(default_factory=list)
    parts: int = 0
    body_bytes: int = 0

    @property
    def stored(self) -> list[InstanceResult]:
        return [r for r in self.instances if r.ok]

    @property
    def failed(self) -> list[InstanceResult]:
        return [r for r in self.instances if not r.ok]

    def status_code(self) -> int:
        """200 all stored, 202 some stored or warnings, 409 none stored (507: all for want of space), 204
        nothing sent."""
        if not self.instances:
            return 204
        if not self.stored:
            if all(is_out_of_resources(r.outcome.failure_code) for r in self.instances):
                return 507
            return 409
        if self.failed or any(r.warnings for r in self.instances):
            return 202
        return 200


# -- receiving ----------------------------------------------------------------


async def receive(
    request: Request, study_uid: str | None = None, *, source: Source | None = None
) -> StowResult:
    """Stream, spool, parse and ingest one STOW-RS request body (see the module docstring)."""
    ctx: NodeContext = request.app.state.ctx
    if study_uid is not None and not valid_uid(study_uid):
        raise StowError(400, f"study in the URL is not a valid UID: {study_uid[:80]!r}")
    boundary, root_type = _content_type(request.headers.get("content-type", ""))
    limits = ctx.settings.http
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_body_bytes:
        raise StowError(
            413, f"body of {length} bytes is larger than [http].max_body_bytes ({limits.max_body_bytes})"
        )
    refusal = await run_in_threadpool(ctx.space.refusal)
    if refusal:
        raise StowError(507, f"{refusal}; nothing was stored")
    flushes: list = []

    def flush_early(part: Part) -> None:
        # Start writing the part to disk while the rest of the body arrives, so the
        # fsync the ingest path does before acknowledging finds little left to do.
        if ctx.store.fsync:
            flushes.append(_executor().submit(_flush, part.path))

    spooler = BodySpooler(
        new_temp=ctx.store.temp_path,
        on_part_done=flush_early,
        boundary=boundary,
        content_encoding=request.headers.get("content-encoding", ""),
        max_body_bytes=limits.max_body_bytes,
        max_parts=limits.max_parts,
        single_headers={"content-type": root_type},
    )
    started = time.monotonic()
    try:
        await _pump(request, spooler)
        parts = await run_in_threadpool(spooler.finish)
        result = StowResult(study_uid=study_uid, parts=len(parts), body_bytes=spooler.body_bytes)
        spooled = time.monotonic()
        if parts:
            result.instances = await _ingest_parts(ctx, parts, root_type, study_uid, source or Source("stow"))
    finally:
        for future in flushes:
            await asyncio.wrap_future(future)
        await run_in_threadpool(spooler.cleanup)
    note(
        request,
        f"{result.parts} parts, {len(result.stored)} stored, {len(result.failed)} failed, "
        f"{result.body_bytes / 1e6:.1f} MB "
        f"(body {spooled - started:.2f}s, store {time.monotonic() - spooled:.2f}s)"
        # Why (the first few): the response body says it to the client, this to the operator.
        + "".join(
            f"; refused with {status_text(r.outcome.failure_code)}: {r.outcome.reason}"
            for r in result.failed[:3]
        ),
    )
    return result


def _flush(path: Path) -> None:
    """fsync a spooled part (a no-op if it is already gone): the ingest path's own fsync then
    finds nothing dirty, data or inode."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _content_type(header: str) -> tuple[str | None, str]:
    """(boundary or None for a single part, the root media type) of a request; 415/400 otherwise."""
    media_type, params = parse_media_type(header)
    if media_type == DICOM:
        return None, DICOM
    if media_type != "multipart/related":
        raise StowError(
            415,
            f"unsupported media type {media_type or '(none)'!r}: send multipart/related; "
            f'type="application/dicom" (or application/dicom+json, application/dicom+xml)',
        )
    root_type = parse_media_type(params.get("type", DICOM))[0]
    if root_type not in SUPPORTED_TYPES:
        raise StowError(
            415, f"unsupported multipart type {root_type!r}: expected one of {', '.join(SUPPORTED_TYPES)}"
        )
    boundary = params.get("boundary")
    if not boundary:
        raise StowError(400, "multipart/related Content-Type without a boundary parameter")
    return boundary, root_type


async def _pump(request: Request, spooler: BodySpooler) -> None:
    """Feed the body to the spooler in a worker thread, reading the next batch meanwhile."""
    pending: asyncio.Future | None = None
    batch: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            batch.append(chunk)
            size += len(chunk)
            if size >= FEED_BATCH:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(run_in_threadpool(spooler.feed, b"".join(batch)))
                batch, size = [], 0
        if pending is not None:
            await pending
            pending = None
        if batch:
            await run_in_threadpool(spooler.feed, b"".join(batch))
    except ClientDisconnect:
        raise StowError(400, "client closed the connection before the body ended") from None
    finally:
        if pending is not None:
            # An error elsewhere: let the feed finish before the spooler is cleaned up.
            try:
                await pending
            except Exception:
                pass


# -- building and ingesting ------------------------------------------------------


@dataclass
class _Job:
    """One instance to store: a Part-10 part, or a data set from metadata."""

    part: Part
    dataset: dict | None = None  # JSON model of a metadata data set


async def _ingest_parts(
    ctx: NodeContext, parts: list[Part], root_type: str, study_uid: str | None, source: Source
) -> list[InstanceResult]:
    jobs, failures, bulk = await run_in_threadpool(_plan, parts, root_type)
    loop = asyncio.get_running_loop()
    pool = _executor("ingest")
    futures = [loop.run_in_executor(pool, _run_job, ctx, job, bulk, study_uid, source) for job in jobs]
    results = list(await asyncio.gather(*futures))
    return sorted(results + failures, key=lambda r: r.part or 0)


def _plan(parts: list[Part], root_type: str) -> tuple[list[_Job], list[InstanceResult], dict[str, Part]]:
    """Sort the parts into instances to store, bulk data to look up, and failures."""
    jobs: list[_Job] = []
    failures: list[InstanceResult] = []
    bulk: dict[str, Part] = {}
    candidates: list[Part] = []
    metadata_bytes = 0
    for part in parts:
        ctype = part.content_type or root_type
        if ctype == "application/json" and root_type == DICOM_JSON:
            ctype = DICOM_JSON  # some clients label the metadata part plain JSON
        if ctype == DICOM:
            jobs.append(_Job(part))
        elif ctype in (DICOM_JSON, DICOM_XML):
            metadata_bytes += part.size
            if metadata_bytes > MAX_METADATA_BYTES:
                # Metadata is parsed in memory: bound the total per request too.
                failures.append(
                    _failure(
                        part,
                        OUT_OF_RESOURCES,
                        f"part {part.index}: more than {MAX_METADATA_BYTES} bytes of metadata in one request",
                    )
                )
                continue
            try:
                if ctype == DICOM_JSON:
                    datasets = load_json(part.path, MAX_METADATA_BYTES)
                else:
                    datasets = [load_xml(part.path, MAX_METADATA_BYTES)]
            except MetadataError as exc:
                failures.append(_failure(part, exc.code, f"part {part.index}: {exc}"))
                continue
            except Exception as exc:  # a parser failing in a way of its own: still this part's failure
                reason = f"part {part.index}: metadata cannot be read: {exc}"
                failures.append(_failure(part, METADATA_NOT_PARSEABLE, reason))
                continue
            jobs += [_Job(part, ds) for ds in datasets]
        else:
            candidates.append(part)
            for key in _bulk_keys(part):
                bulk.setdefault(key, part)
    referenced = {id(p) for job in jobs if job.dataset is not None for p in _referenced(job.dataset, bulk)}
    for part in candidates:
        if id(part) in referenced:
            continue
        if _looks_like_part10(part.path):
            jobs.append(_Job(part))  # a Part-10 file under a generic media type
        else:
            failures.append(
                _failure(
                    part,
                    CANNOT_UNDERSTAND,
                    f"part {part.index} ({part.content_type or 'no Content-Type'}) is not DICOM "
                    "and no metadata references it",
                )
            )
    return jobs, failures, bulk


def _looks_like_part10(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def _bulk_keys(part: Part) -> list[str]:
    keys = []
    if part.content_location:
        keys.append(part.content_location)
    if part.content_id:
        keys.append(f"cid:{part.content_id}")
    return keys


def _find(bulk: dict[str, Part], uri: str) -> Part | None:
    """The part a BulkDataURI names: exact Content-Location, cid:, else the same last path segment."""
    if uri in bulk:
        return bulk[uri]
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    matches = {id(p): p for key, p in bulk.items() if key.rstrip("/").rsplit("/", 1)[-1] == tail}
    return next(iter(matches.values())) if len(matches) == 1 else None


def _referenced(obj, bulk: dict[str, Part]) -> list[Part]:
    """Every bulk part a JSON-model data set refers to (at any depth; iterative, no recursion)."""
    found: list[Part] = []
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            uri = item.get("BulkDataURI")
            if isinstance(uri, str) and (part := _find(bulk, uri)) is not None:
                found.append(part)
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return found


def _failure(part: Part | None, code: int, reason: str, **uids: str) -> InstanceResult:
    return InstanceResult(
        Outcome(Status.FAILED, reason=reason, failure_code=code, **uids),
        part=part.index if part else None,
    )


def _run_job(
    ctx: NodeContext, job: _Job, bulk: dict[str, Part], study_uid: str | None, source: Source
) -> InstanceResult:
    """Build (if from metadata), check against the URL's study, and ingest one instance.

    Whatever goes wrong becomes this instance's failure, never the request's 500.
    """
    try:
        return _build_and_ingest(ctx, job, bulk, study_uid, source)
    except Exception as exc:
        log.exception("STOW-RS part %d failed", job.part.index)
        return _failure(job.part, PROCESSING_FAILURE, f"part {job.part.index}: could not be stored: {exc}")


def _build_and_ingest(
    ctx: NodeContext, job: _Job, bulk: dict[str, Part], study_uid: str | None, source: Source
) -> InstanceResult:
    part = job.part
    warnings: tuple[int, ...] = ()
    if job.dataset is None:
        path = part.path
        if study_uid is not None:
            mismatch = _study_mismatch_part10(path, study_uid)
            if mismatch is not None:
                path.unlink(missing_ok=True)
                return InstanceResult(mismatch, part=part.index)
    else:
        try:
            ds, refs = dataset_from_json(job.dataset, lambda uri: _load_nested(bulk, uri))
            their_study = str(ds.get("StudyInstanceUID", "") or "")
            if study_uid is not None and their_study and their_study != study_uid:
                return _failure(
                    part,
                    STUDY_UID_MISMATCH,
                    f"StudyInstanceUID {their_study} differs from the study {study_uid} of the URL",
                    sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
                    sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
                    study_uid=their_study,
                )
            built = build_instance(ds, refs, lambda uri: _as_bulk(bulk, uri), ctx.store.temp_path, study_uid)
        except (MetadataError, BuildError) as exc:
            return _failure(part, exc.code, f"part {part.index}: {exc}")
        except OSError as exc:  # writing the instance: the disk may be full
            code = OUT_OF_RESOURCES if is_full(exc) else PROCESSING_FAILURE
            return _failure(part, code, f"part {part.index}: the instance cannot be written: {exc.strerror}")
        except Exception as exc:  # pydicom accepted a value it cannot encode ("vr": "US", "Value": ["x"])
            return _failure(
                part, METADATA_NOT_PARSEABLE, f"part {part.index}: the data set cannot be encoded: {exc}"
            )
        path, warnings = built.path, tuple(built.warnings)
    outcome = ctx.ingest.ingest_file(path, source, take=True)
    if not outcome.ok:
        if job.dataset is None:
            outcome = replace(outcome, reason=f"part {part.index}: {outcome.reason}")
        return InstanceResult(outcome, part=part.index)
    relative = ctx.store.relative_path(outcome.study_uid, outcome.series_uid, outcome.sop_instance_uid)
    return InstanceResult(outcome, path=relative, warnings=warnings, part=part.index)


def _study_mismatch_part10(path: Path, study_uid: str) -> Outcome | None:
    try:
        header = read_header(path)
    except Rejected:
        return None  # ingest_file says why it is not DICOM
    theirs = str(header.get("StudyInstanceUID", "") or "")
    if theirs == study_uid:
        return None
    return Outcome(
        Status.FAILED,
        sop_class_uid=str(header.get("SOPClassUID", "") or ""),
        sop_instance_uid=str(header.get("SOPInstanceUID", "") or ""),
        study_uid=theirs,
        reason=f"StudyInstanceUID {theirs or '(none)'} differs from the study {study_uid} of the URL",
        failure_code=STUDY_UID_MISMATCH,
    )


def _as_bulk(bulk: dict[str, Part], uri: str) -> Bulk | None:
    part = _find(bulk, uri)
    return Bulk(part.path, part.size, part.content_type) if part is not None else None


def _load_nested(bulk: dict[str, Part], uri: str) -> bytes:
    part = _find(bulk, uri)
    if part is None:
        raise BuildError(
            0xC902, f"bulk data {uri!r} is not a part of the body (no matching Content-Location)"
        )
    if part.size > MAX_NESTED_BULK_BYTES:
        raise BuildError(
            0xC122, f"bulk data {uri!r} inside a sequence is larger than {MAX_NESTED_BULK_BYTES} bytes"
        )
    return part.path.read_bytes()


# -- the response ----------------------------------------------------------------


def _instance_url(base_url: str, o: Outcome) -> str:
    return f"{base_url}/dicom-web/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_instance_uid}"


def _uid_attrs(o: Outcome) -> dict:
    item: dict = {
        "00081150": {"vr": "UI"},
        "00081155": {"vr": "UI"},
    }
    if o.sop_class_uid:
        item["00081150"]["Value"] = [o.sop_class_uid]
    if o.sop_instance_uid:
        item["00081155"]["Value"] = [o.sop_instance_uid]
    return item


def response_body(result: StowResult, base_url: str, extra_failures: Iterable[InstanceResult] = ()) -> dict:
    """The Store Instances Response data set in the DICOM JSON model."""
    base_url = base_url.rstrip("/")
    extra = list(extra_failures)
    refused = {r.outcome.sop_instance_uid for r in extra if r.outcome.sop_instance_uid}
    stored = [r for r in result.stored if r.outcome.sop_instance_uid not in refused]
    failed = result.failed + extra
    body: dict = {}
    studies = {r.outcome.study_uid for r in stored}
    study = result.study_uid or (next(iter(studies)) if len(studies) == 1 else None)
    if study:
        body["00081190"] = {"vr": "UR", "Value": [f"{base_url}/dicom-web/studies/{study}"]}
    if failed:
        items = []
        for r in failed:
            item = _uid_attrs(r.outcome)
            item["00081197"] = {"vr": "US", "Value": [r.outcome.failure_code or 0x0110]}
            if r.outcome.reason:
                item["00000902"] = {"vr": "LO", "Value": [_comment(r.outcome.reason)]}
            items.append(item)
        body["00081198"] = {"vr": "SQ", "Value": items}
    if stored:
        items = []
        for r in stored:
            item = _uid_attrs(r.outcome)
            item["00081190"] = {"vr": "UR", "Value": [_instance_url(base_url, r.outcome)]}
            if r.warnings:
                item["00081196"] = {"vr": "US", "Value": list(r.warnings)}
            items.append(item)
        body["00081199"] = {"vr": "SQ", "Value": items}
    return body


def _comment(reason: str) -> str:
    # ErrorComment is LO (64 chars) in DIMSE; here it is informative, so keep it whole but printable.
    return "".join(c if c.isprintable() and c != "\\" else "?" for c in reason)[:1024]


class DicomJSONResponse(JSONResponse):
    media_type = "application/dicom+json"


def stow_response(
    result: StowResult,
    base_url: str,
    status_override: int | None = None,
    extra_failures: Iterable[InstanceResult] = (),
) -> Response:
    """Render *result* as the PS3.18 Store Instances Response (see the module docstring)."""
    extra = list(extra_failures)
    status = status_override
    if status is None:
        status = result.status_code()
        if extra and status != 204:
            refused = {r.outcome.sop_instance_uid for r in extra}
            still = [r for r in result.stored if r.outcome.sop_instance_uid not in refused]
            status = 409 if not still else 202
    if status == 204:
        return Response(status_code=204)
    return DicomJSONResponse(response_body(result, base_url, extra), status_code=status)


def error_response(exc: StowError) -> Response:
    """A refused request (400 / 413 / 415) as JSON naming the problem."""
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def base_url(request: Request) -> str:
    """scheme://host[:port][root_path] of *request*, for RetrieveURLs."""
    return str(request.base_url).rstrip("/")


# -- the endpoints --------------------------------------------------------------


async def store_instances(request: Request) -> Response:
    """POST /dicom-web/studies[/{study}]."""
    try:
        result = await receive(request, request.path_params.get("study"))
    except StowError as exc:
        note(request, exc.message)
        return error_response(exc)
    return stow_response(result, base_url(request))


routes = [
    Route("/dicom-web/studies", store_instances, methods=["POST"]),
    Route("/dicom-web/studies/{study}", store_instances, methods=["POST"]),
]
