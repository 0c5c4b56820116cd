"""The console's pages: server-rendered from the index, the query engine and the node's own APIs.

Thin like the other doors: each handler reads what it shows in a worker
thread (the query engine for study and series lists, node.index.figures for
sizes and counts, the export and forward reports the API serves) and renders
a template.  Actions (delete, send, echo, retry, upload, ZIP) are the
node's HTTP API called by the page's script; a feature whose route this node
does not have is shown as unavailable, never as a broken button.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import shutil
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ... import __version__, metrics, viewer
from ...context import NodeContext
from ...export.accession import InvalidAccession, validate
from ...export.service import job_json
from ...index import figures
from ...index import query as engine
from ...remotes.forward_admin import remote_report
from .. import auth
from ..access_log import note
from ..wado import retrieve

log = logging.getLogger("node.console")

PAGE_SIZE = 25
MAX_LOGIN_BODY = 4096
LOGIN_FAILURE_DELAY_S = 0.5

STUDY_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "StudyID",
    "ReferringPhysicianName",
    "InstitutionName",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = (
    "SeriesNumber",
    "Modality",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesDate",
    "SeriesTime",
    "NumberOfSeriesRelatedInstances",
)

# Console pages may only load what the node serves (works offline; an injected script cannot run).
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Features:
    """Which of the node's routes a page can use (other branches add some of them)."""

    delete: bool = False
    echo: bool = False
    store: bool = False
    jobs: bool = False
    study_thumbnail: bool = False
    series_thumbnail: bool = False


def _ctx(request: Request) -> NodeContext:
    return request.app.state.ctx


def _templates(request: Request) -> Jinja2Templates:
    return request.app.state.console_templates


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """A console page: the template with what every page shows (nav, node, CSRF token)."""
    ctx = _ctx(request)
    token = ctx.settings.http.token
    common = {
        "node": {
            "ae_title": ctx.settings.dicom.ae_title,
            "version": __version__,
            "dicom_port": ctx.settings.dicom.port,
        },
        "login_enabled": bool(token),
        "csrf": auth.request_csrf(request, token),
        "features": request.app.state.console_features,
        "viewer": viewer.installed(ctx.settings.http.viewer_path),
    }
    response = _templates(request).TemplateResponse(request, name, {**common, **context}, status_code=status)
    response.headers.update(PAGE_HEADERS)
    return response


# -- the study list -------------------------------------------------------------------


@dataclass(frozen=True)
class StudySearch:
    name: str = ""
    patient_id: str = ""
    accession: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    page: int = 1

    @classmethod
    def from_params(cls, params) -> StudySearch:
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        return cls(
            name=params.get("name", "").strip(),
            patient_id=params.get("pid", "").strip(),
            accession=params.get("accession", "").strip(),
            date_from=params.get("from", "").strip(),
            date_to=params.get("to", "").strip(),
            modality=params.get("modality", "").strip(),
            page=page,
        )

    @property
    def active(self) -> bool:
        return any((self.name, self.patient_id, self.accession, self.date_from, self.date_to, self.modality))

    def query(self) -> engine.Query:
        """The engine query: a name matches any name part by prefix, IDs by prefix (unless wildcards)."""
        filters: dict[str, str] = {}
        fuzzy = False
        if self.name:
            filters["PatientName"] = self.name
            fuzzy = not _has_wildcard(self.name)
        if self.patient_id:
            filters["PatientID"] = _prefix(self.patient_id)
        if self.accession:
            filters["AccessionNumber"] = _prefix(self.accession)
        if self.date_from or self.date_to:
            filters["StudyDate"] = f"{_date(self.date_from)}-{_date(self.date_to)}"
        if self.modality:
            filters["ModalitiesInStudy"] = self.modality
        return engine.Query(
            "STUDY",
            filters,
            STUDY_KEYS,
            fuzzy=fuzzy,
            limit=PAGE_SIZE + 1,
            offset=(self.page - 1) * PAGE_SIZE,
            newest_first=True,
        )

    def url(self, **changes: Any) -> str:
        """The list's URL with *changes* (e.g. ``page=2``)."""
        s = dataclasses.replace(self, **changes)
        params = {
            "name": s.name,
            "pid": s.patient_id,
            "accession": s.accession,
            "from": s.date_from,
            "to": s.date_to,
            "modality": s.modality,
            "page": s.page if s.page > 1 else "",
        }
        query = urlencode({k: v for k, v in params.items() if v})
        return "/" + (f"?{query}" if query else "")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _prefix(value: str) -> str:
    return value if _has_wildcard(value) else value + "*"


def _date(value: str) -> str:
    """An HTML date (``2024-01-05``) or a DICOM date as the DICOM form; anything else as typed."""
    return value.replace("-", "") if value else ""


def _study_list(search: StudySearch) -> dict[str, Any]:
    rows = list(engine.run(search.query()))
    return {
        "studies": rows[:PAGE_SIZE],
        "has_next": len(rows) > PAGE_SIZE,
        "modalities": figures.modalities(),
        "total": figures.counts()["studies"],
    }


async def studies(request: Request) -> Response:
    search = StudySearch.from_params(request.query_params)
    error = ""
    try:
        found = await run_in_threadpool(_study_list, search)
    except engine.QueryError as exc:
        error = str(exc)
        note(request, error)
        found = {"studies": [], "has_next": False, "modalities": [], "total": 0}
    first = (search.page - 1) * PAGE_SIZE + 1
    return render(
        request,
        "studies.html",
        status=400 if error else 200,
        nav="studies",
        search=search,
        error=error,
        first=first,
        last=first + len(found["studies"]) - 1,
        deleted=request.query_params.get("deleted", ""),
        **found,
    )


# -- one study -------------------------------------------------------------------------


def _study(study_uid: str) -> dict[str, Any] | None:
    try:
        matches = list(engine.run(engine.Query("STUDY", {"StudyInstanceUID": study_uid}, STUDY_KEYS)))
    except engine.QueryError:
        return None
    if not matches:
        return None
    study = matches[0]
    series = list(engine.run(engine.Query("SERIES", {"StudyInstanceUID": study_uid}, SERIES_KEYS)))
    series.sort(key=lambda s: (s["SeriesNumber"] == "", s["SeriesNumber"] or 0))
    sizes = figures.study_figures(study_uid) or {}
    for item in series:
        uid = item["SeriesInstanceUID"]
        item["figures"] = sizes.get(uid, figures.SeriesFigures(uid))
    syntaxes: dict[str, int] = {}
    for f in sizes.values():
        for uid, n in f.transfer_syntaxes.items():
            syntaxes[uid] = syntaxes.get(uid, 0) + n
    export = None
    accession_problem = ""
    if study["AccessionNumber"]:
        try:
            accession = validate(str(study["AccessionNumber"]))
            job = figures.export_job(accession)
            export = job_json(job) if job else None
        except InvalidAccession as exc:
            accession_problem = str(exc)
    return {
        "study": study,
        "series": series,
        "bytes": sum(f.bytes for f in sizes.values()),
        "transfer_syntaxes": syntaxes,
        "export": export,
        "accession_problem": accession_problem,
    }


async def study(request: Request) -> Response:
    uid = request.path_params["study"]
    found = await run_in_threadpool(_study, uid)
    if found is None:
        note(request, "unknown study")
        return render(request, "missing.html", status=404, nav="studies", what="study", uid=uid)
    remotes = [r.name for r in _ctx(request).settings.remotes]
    return render(request, "study.html", nav="studies", remotes=remotes, **found)


async def study_zip(request: Request) -> Response:
    """The study as a ZIP (WADO-RS with ``Accept: application/zip``), so that a plain link downloads it."""
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"accept"]
    scope["headers"].append((b"accept", b"application/zip"))
    return await retrieve(Request(scope, request.receive))


# -- upload, remotes, jobs, status ---------------------------------------------------------


async def upload(request: Request) -> Response:
    return render(request, "upload.html", nav="upload")


def _remote_reports(request: Request) -> list[dict[str, Any]]:
    forwarder = getattr(request.app.state, "forwarder", None)
    remotes = _ctx(request).settings.remotes
    return [remote_report(r, forwarder.status(r.name) if forwarder else None) for r in remotes]


async def remotes(request: Request) -> Response:
    reports = await run_in_threadpool(_remote_reports, request)
    return render(request, "remotes.html", nav="remotes", remotes=reports)


def _exports() -> list[dict[str, Any]]:
    return [job_json(job) for job in figures.recent_export_jobs()]


async def jobs(request: Request) -> Response:
    exports = await run_in_threadpool(_exports)
    active = any(j["state"] in ("queued", "retrieving", "zipping") for j in exports)
    return render(request, "jobs.html", nav="jobs", exports=exports, active=active)


def _status(ctx: NodeContext) -> dict[str, Any]:
    totals = figures.recent_store_totals()
    try:
        disk = shutil.disk_usage(ctx.settings.storage.path)
    except OSError:
        disk = None
    return {
        "counts": figures.counts(),
        "stored_bytes": totals.bytes,
        "disk": disk,
        "outbox": figures.outbox_by_remote(),
        "exports": figures.export_jobs_by_state(),
        "archive_bytes": figures.archive_bytes(),
    }


async def status(request: Request) -> Response:
    ctx = _ctx(request)
    found = await run_in_threadpool(_status, ctx)
    return render(
        request,
        "status.html",
        nav="status",
        uptime_s=time.time() - ctx.started_at,
        associations=metrics.active_associations(),
        settings=ctx.settings,
        **found,
    )


# -- logging in ----------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    token = _ctx(request).settings.http.token
    target = auth.safe_next(request.query_params.get("next"))
    if not token:
        return RedirectResponse(target, status_code=303)
    if request.method == "GET":
        return render(request, "login.html", next=target, error="")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return Response("login form too large", status_code=413)
    form = dict(parse_qsl(body.decode("utf-8", "replace")))
    target = auth.safe_next(form.get("next") or target)
    given = form.get("token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        note(request, "wrong token")
        log.warning("console login from %s refused: wrong token", (request.client or ("?",))[0])
        await asyncio.sleep(LOGIN_FAILURE_DELAY_S)  # slows guessing down
        return render(request, "login.html", status=401, next=target, error="That token is not right.")
    response = RedirectResponse(target, status_code=303)
    auth.set_session(response, token, secure=request.url.scheme == "https")
    note(request, "logged in")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse(auth.LOGIN_PATH, status_code=303)
    auth.clear_session(response)
    return response
