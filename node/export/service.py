"""ZIP export per accession number: requests, routing, and the "export" job kind.

``request`` (POST) and ``fetch`` (GET) answer with an :class:`Answer` that
the HTTP layer maps to a status; the long work is a job of kind ``export``
keyed by the accession (node/jobs), so two requests, from any process,
share one job, and whichever worker claims it runs :meth:`ExportJobs.run`:

1. Routing.  A study held locally (by AccessionNumber in the index) is
   archived from the store; no remote is contacted.  Otherwise the remote
   whose ``accession_prefixes`` match is asked with a C-FIND (in the request,
   so that an unknown accession gets its 404 at once, as Medialog's stored
   procedure did), and the job C-MOVEs (or C-GETs) each study it found.
2. Retrieval is checked: fewer instances in the index than the remote
   announced (or than the sub-operations it reported) fails the job with the
   counts; no archive is made from a partial study.
3. The archive is built from the store (``archive.build``) and the study
   version it reflects is recorded, so that a later request serves it again
   until an instance is added to or replaced in the study.

A job interrupted by a shutdown goes back to the queue with its phase and
is run again from its start (a job cut short while zipping had verified its
retrieval, and only zips).  The export's own words for its states:
queued / retrieving / zipping / ready / failed (:func:`export_state`).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..context import NodeContext
from ..index import jobs
from ..index.jobs import DONE, FAILED, INTERNAL, NOT_FOUND, PARTIAL, QUEUED, REMOTE, Job
from ..jobs.kinds import Failed, Interrupted, Progress
from ..jobs.public import iso
from ..jobs.runner import JobRunner
from ..remotes import retrieve
from . import archive
from .accession import file_stem, validate

log = logging.getLogger("node.export")

KIND = jobs.EXPORT
RETRIEVING = jobs.EXPORT_RETRIEVING
ZIPPING = jobs.EXPORT_ZIPPING
READY = jobs.EXPORT_READY


class Kind(enum.Enum):
    READY = "ready"  # the archive is there: ``path``
    PENDING = "pending"  # a job is preparing it
    NOT_FOUND = "not_found"  # no such accession anywhere / nothing prepared
    FAILED = "failed"  # the job failed: ``job`` says why


@dataclass(frozen=True)
class Answer:
    kind: Kind
    accession: str
    job: dict | None = None
    message: str = ""
    path: Path | None = None

    @property
    def download_name(self) -> str:
        return file_stem(self.accession) + archive.SUFFIX


def export_state(job: Job) -> str:
    """The export's word for a job's state: queued / retrieving / zipping / ready / failed."""
    return jobs.export_state(job.state, job.phase)


def _built_from(job: Job) -> dt.datetime | None:
    value = job.data.get("study_updated_at")
    return dt.datetime.fromisoformat(value) if value else None


def job_json(job: Job) -> dict:
    """The export's public form of its job (the JSON of the ``/accessions`` answers)."""
    data = job.data
    return {
        "id": job.id,
        "accession": job.key,
        "state": export_state(job),
        "remote": data.get("remote") or None,
        "expected": job.total,
        "received": job.done,
        "instances": data.get("instances", 0),
        "bytes": job.bytes,
        "message": job.message,
        "failure": job.failure or None,
        "url": f"/accessions/{quote(job.key or '', safe='')}/zip",
        "job_url": f"/jobs/{job.id}",
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }


@dataclass
class _Work:
    """What one run of an export job knows and reports (the row is written through *progress*)."""

    job: Job
    progress: Progress
    accession: str
    remote: str
    study_uids: list[str]
    expected: int | None
    received: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, *, flush: bool = False, **values: Any) -> None:
        """Record progress in the export's terms (``received``, ``expected``, ``study_uids``...)."""
        fields: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        for name, value in values.items():
            if name in ("phase", "bytes", "message", "failure"):
                fields[name] = value
            elif name == "received":
                self.received = value
                fields["done"] = value
            elif name == "expected":
                self.expected = value
                fields["total"] = value
            elif name == "study_uids":
                self.study_uids = value
                payload["study_uids"] = "\\".join(value)
            else:
                payload[name] = value
        self.progress.update(flush=flush, payload=payload or None, **fields)


class ExportService:
    """Answers export requests and runs export jobs for one node."""

    def __init__(self, ctx: NodeContext, runner: JobRunner) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.export_dir = ctx.settings.export.path
        self.runner = runner

    # -- lifecycle -------------------------------------------------------------

    def install(self) -> None:
        """Register the export kind on the runner and tidy the archive folder."""
        self.export_dir.mkdir(parents=True, exist_ok=True)
        archive.discard_temp(self.export_dir)
        self.runner.register(KIND, ExportJobs(self), concurrency=self.settings.export.workers)
        unfinished = jobs.count_active(KIND)
        if unfinished:
            log.info("resuming %d unfinished export job(s)", unfinished)
        self._evict(keep=set())

    # -- requests --------------------------------------------------------------

    def request(self, raw_accession: str | None) -> Answer:
        """POST: serve a fresh archive, join a running job, or start one (after routing)."""
        accession = validate(raw_accession)
        job = jobs.find(KIND, accession)
        early = self._existing(job)
        if early is not None:
            return early
        fields, refusal = self._route(accession, job)
        if refusal is not None:
            return refusal
        payload = {
            "remote": fields["remote"],
            "study_uids": fields["study_uids"],
            "instances": 0,
            "file_name": "",
            "study_updated_at": None,
        }
        failure = fields.get("failure", "")
        job, _created = self.runner.submit(
            KIND,
            accession,
            payload,
            total=fields["expected"],
            state=FAILED if failure else QUEUED,
            failure=failure,
            message=fields.get("message", ""),
        )
        if job.state == FAILED:
            log.info("export %s: %s", accession, job.message)
            return Answer(Kind.FAILED, accession, job_json(job), job.message)
        return Answer(Kind.PENDING, accession, job_json(job))

    def fetch(self, raw_accession: str | None) -> Answer:
        """GET: the archive when ready, else the job; a stale archive is rebuilt."""
        accession = validate(raw_accession)
        job = jobs.find(KIND, accession)
        if job is None and archive.local_version(accession).held:
            # Held here but never prepared: prepare it now (202), so that Medialog's
            # get_studies_zip works before (or without) create_studies_zip.
            return self.request(accession)
        if job is None:
            return Answer(
                Kind.NOT_FOUND,
                accession,
                message=f"no archive prepared for accession number {accession!r}; "
                f"POST /accessions/{quote(accession, safe='')}/zip first",
            )
        if export_state(job) == FAILED:
            kind = Kind.NOT_FOUND if job.failure == NOT_FOUND else Kind.FAILED
            return Answer(kind, accession, job_json(job), job.message)
        early = self._existing(job)
        if early is not None:
            return early
        # Ready but out of date (the study changed, or the file was evicted): rebuild.
        return self.request(accession)

    def _existing(self, job: Job | None) -> Answer | None:
        """The answer an existing job gives by itself, or None when a (re)build is due."""
        if job is None:
            return None
        accession = job.key or ""
        if job.state in jobs.ACTIVE_STATES:
            return Answer(Kind.PENDING, accession, job_json(job))
        if job.state == DONE:
            path = archive.archive_path(self.export_dir, accession)
            version = archive.local_version(accession)
            built_from = _built_from(job)
            fresh = (
                path.is_file()
                and version.updated_at is not None
                and built_from is not None
                and version.updated_at <= built_from
            )
            return Answer(Kind.READY, accession, job_json(job), path=path) if fresh else None
        return None  # failed: a new request tries again

    def _route(self, accession: str, job: Job | None) -> tuple[dict, Answer | None]:
        """Where the study comes from: the job's fields, or a 404 answer."""
        # After a failed or partial retrieval the local copy may be incomplete:
        # ask the remote again rather than archive what arrived.
        retry_remote = job is not None and job.state == FAILED and job.failure in (REMOTE, PARTIAL)
        if archive.local_version(accession).held and not retry_remote:
            return {"remote": "", "study_uids": "", "expected": None}, None
        remote = self.settings.remote_for_accession(accession)
        if remote is None:
            self._forget(job)
            return {}, Answer(
                Kind.NOT_FOUND,
                accession,
                message=f"there is no study with accession number {accession!r}: this node holds none "
                "and no remote's accession_prefixes match it",
            )
        try:
            matches = retrieve.find_studies(remote, self.settings.dicom.ae_title, accession)
        except retrieve.RetrieveError as exc:
            failed = {"remote": remote.name, "study_uids": "", "expected": None}
            return {**failed, "failure": REMOTE, "message": str(exc)}, None
        if not matches:
            self._forget(job)
            return {}, Answer(
                Kind.NOT_FOUND,
                accession,
                message=f"there is no study with accession number {accession!r}: this node holds none "
                f"and {retrieve.describe(remote)} has none",
            )
        counts = [m.expected for m in matches]
        expected = sum(counts) if all(c is not None for c in counts) else None  # type: ignore[misc]
        uids = "\\".join(m.study_uid for m in matches)
        return {"remote": remote.name, "study_uids": uids, "expected": expected}, None

    def _forget(self, job: Job | None) -> None:
        """Drop the row (and archive) of an accession that no longer exists anywhere."""
        if job is None:
            return
        jobs.remove([job.id])
        archive.archive_path(self.export_dir, job.key or "").unlink(missing_ok=True)

    # -- running a job ---------------------------------------------------------

    def run(self, job: Job, progress: Progress) -> None:
        """Prepare the archive of *job*'s accession (the body of the export kind)."""
        data = job.data
        work = _Work(
            job,
            progress,
            accession=job.key or "",
            remote=data.get("remote", ""),
            study_uids=[u for u in data.get("study_uids", "").split("\\") if u],
            expected=job.total,
        )
        started = time.monotonic()
        cancel = retrieve.Cancel()
        progress.on_cancel(cancel.cancel)
        try:
            # A job interrupted while zipping had verified its retrieval already.
            if not (work.remote and job.phase != ZIPPING and self._retrieve(work, cancel)):
                self._zip(work)
        except (_Stopped, Interrupted):
            log.info("export %s: interrupted; resumes from its start", work.accession)
            raise Interrupted from None
        except Failed:
            raise  # the runner logs it
        except retrieve.RetrieveError as exc:
            if progress.cancelled:
                log.info("export %s: retrieval interrupted; resumes from its start", work.accession)
                raise Interrupted from None
            raise Failed(REMOTE, str(exc)) from None
        except Exception as exc:
            if progress.cancelled:
                log.info("export %s: interrupted (%s); resumes from its start", work.accession, exc)
                raise Interrupted from None
            log.exception("export %s failed", work.accession)
            raise Failed(INTERNAL, f"could not prepare the archive: {exc}") from None
        log.info(
            "export %s ready: %d instances, %d bytes%s in %.2fs",
            work.accession,
            work.extra["instances"],
            work.extra["bytes"],
            f" (retrieved from {work.remote})" if work.remote else "",
            time.monotonic() - started,
        )

    def _retrieve(self, work: _Work, cancel: retrieve.Cancel) -> bool:
        """Retrieve the job's studies while archiving them as they arrive; True once published.

        False means the retrieval is verified but the archive written on the
        way does not match the index (an instance went away meanwhile): the
        caller builds it again from the store.
        """
        remote = self.settings.remote_by_name(work.remote)
        if remote is None:
            raise Failed(INTERNAL, f"remote {work.remote!r} is no longer configured")
        own_ae = self.settings.dicom.ae_title

        def stopping() -> bool:
            return work.progress.cancelled

        work.save(phase=RETRIEVING, received=0, bytes=0, flush=True)
        uids = work.study_uids
        if not uids:
            matches = retrieve.find_studies(remote, own_ae, work.accession)
            if not matches:
                raise Failed(
                    NOT_FOUND,
                    f"there is no study with accession number {work.accession!r}: "
                    f"{retrieve.describe(remote)} has none",
                )
            uids = [m.study_uid for m in matches]
            counts = [m.expected for m in matches]
            expected = sum(counts) if all(c is not None for c in counts) else None  # type: ignore[misc]
            work.save(study_uids=uids, expected=expected)

        # The archive is written while the instances arrive (compression
        # overlaps the transfer); it is published only if the retrieval is complete.
        finished = threading.Event()
        zipped: dict = {"bytes": 0}

        def zipper() -> None:
            try:
                zipped["result"] = archive.write_temp(
                    archive.arrivals(self.ctx.store, work.accession, uids, finished, should_stop=stopping),
                    self.export_dir,
                    self.settings.export.compression,
                    on_bytes=lambda n: zipped.__setitem__("bytes", n),
                    should_stop=stopping,
                    fsync=self.settings.storage.fsync,
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the job thread
                zipped["error"] = exc

        thread = threading.Thread(target=zipper, name=f"export-zip-{work.job.id}", daemon=True)
        thread.start()
        try:
            have = self._transfer(work, remote, uids, cancel, zipped)
            # Read before the zipper is told to finish: whatever is indexed
            # later makes this archive stale instead of silently missing.
            version = archive.local_version(work.accession)
            work.save(phase=ZIPPING, flush=True)
        except BaseException:
            finished.set()
            thread.join()
            if "result" in zipped:
                zipped["result"][0].unlink(missing_ok=True)
            raise
        finished.set()
        thread.join()
        error = zipped.get("error")
        if isinstance(error, InterruptedError):
            raise _Stopped
        if error is not None:
            raise error
        temp, size, count = zipped["result"]
        if count != have:
            temp.unlink(missing_ok=True)
            return False
        path = archive.publish(temp, self.export_dir, work.accession, fsync=self.settings.storage.fsync)
        self._ready(work, path, size, count, version)
        return True

    def _transfer(self, work: _Work, remote, uids: list[str], cancel, zipped: dict) -> int:
        """Retrieve the studies (the one retrieval engine), reporting progress; verify the count."""

        def on_progress(received: int) -> None:
            # Buffered: the runner writes it to the row a few times a second.
            work.save(received=received, bytes=zipped["bytes"])

        result = retrieve.transfer(
            remote,
            self.settings.dicom.ae_title,
            uids,
            self.ctx.ingest,
            on_progress=on_progress,
            cancel=cancel,
        )
        if work.progress.cancelled:
            raise _Stopped
        have = archive.count_instances(uids)
        expected = max(work.expected or 0, result.announced)
        work.save(received=have)
        if have == 0 or have < expected or result.failed:
            raise Failed(
                PARTIAL,
                f"{result.shortfall(have, expected)} of accession {work.accession!r} from "
                f"{retrieve.describe(remote)}; no archive was made",
            )
        return have

    def _ready(self, work: _Work, path: Path, size: int, count: int, version: archive.Version) -> None:
        values: dict[str, Any] = {}
        if not work.remote:
            values["received"] = count
        work.extra.update(instances=count, bytes=size)
        work.save(
            bytes=size,
            instances=count,
            file_name=path.name,
            study_updated_at=version.updated_at.isoformat(sep=" ") if version.updated_at else None,
            message="",
            failure="",
            **values,
        )
        self._evict(keep={path})

    def _zip(self, work: _Work) -> None:
        # The version is read before the instances are listed: an instance
        # arriving meanwhile makes the archive stale rather than silently missing.
        version = archive.local_version(work.accession)
        if not version.held:
            raise Failed(NOT_FOUND, f"there is no study with accession number {work.accession!r}")
        work.save(phase=ZIPPING, bytes=0, flush=True)
        try:
            path, size, count = archive.build(
                self.ctx.store,
                self.export_dir,
                work.accession,
                self.settings.export.compression,
                on_bytes=lambda n: work.save(bytes=n),
                should_stop=lambda: work.progress.cancelled,
                fsync=self.settings.storage.fsync,
            )
        except InterruptedError:
            raise _Stopped from None
        self._ready(work, path, size, count, version)

    def _evict(self, keep: set[Path]) -> None:
        s = self.settings.export
        removed = archive.evict(self.export_dir, s.max_total_bytes, s.max_age_days, keep)
        if not removed:
            return
        names = {p.name for p in removed}
        jobs.remove(j.id for j in jobs.of_kind(KIND, [DONE]) if j.data.get("file_name") in names)
        log.info("evicted %d archive(s) from %s: %s", len(removed), self.export_dir, ", ".join(sorted(names)))


class ExportJobs:
    """The ``export`` job kind: runs on whichever worker claims the job."""

    def __init__(self, service: ExportService) -> None:
        self.service = service

    def run(self, job: Job, progress: Progress) -> None:
        self.service.run(job, progress)

    def details(self, job: Job) -> dict:
        """The export's own fields in ``GET /jobs``: the ``/accessions`` answer's job."""
        return job_json(job)


class _Stopped(Exception):
    """The node is stopping: leave the row as it is, to be resumed."""
