"""ZIP export per accession number: requests, routing, and the job each one runs.

``request`` (POST) and ``fetch`` (GET) answer with an :class:`Answer` that
the HTTP layer maps to a status; the long work runs as an ``ExportJob`` row
in a bounded :class:`~node.export.workers.WorkerPool`:

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

A job interrupted by a shutdown keeps its state (queued / retrieving /
zipping) and is run again at the next start.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..context import NodeContext
from ..index.db import write_transaction
from ..index.jobs import (
    ACTIVE_STATES,
    FAILED,
    INTERNAL,
    NOT_FOUND,
    PARTIAL,
    QUEUED,
    READY,
    REMOTE,
    RETRIEVING,
    ZIPPING,
    ExportJob,
)
from ..index.models import utcnow
from ..remotes import retrieve
from . import archive
from .accession import file_stem, validate
from .workers import WorkerPool

log = logging.getLogger("node.export")

PROGRESS_EVERY_S = 0.5  # how often a running job writes its counts to its row


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


def job_json(job: ExportJob) -> dict:
    """The public form of a job row."""

    def iso(value) -> str | None:
        return value.isoformat() + "Z" if value else None

    return {
        "accession": job.accession,
        "state": job.state,
        "remote": job.remote or None,
        "expected": job.expected,
        "received": job.received,
        "instances": job.instances,
        "bytes": job.bytes,
        "message": job.message,
        "failure": job.failure or None,
        "url": f"/accessions/{quote(job.accession, safe='')}/zip",
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }


class ExportService:
    """Answers export requests and runs export jobs for one node."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.export_dir = ctx.settings.export.path
        self.pool = WorkerPool(self._run, ctx.settings.export.workers, name="export")
        self._stopping = threading.Event()
        self._cancels: dict[int, retrieve.Cancel] = {}
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and re-run the jobs a previous run left unfinished."""
        self.export_dir.mkdir(parents=True, exist_ok=True)
        archive.discard_temp(self.export_dir)
        self.pool.start()
        resumed = [job.id for job in ExportJob.select(ExportJob.id).where(ExportJob.state.in_(ACTIVE_STATES))]
        for job_id in resumed:
            self.pool.submit(job_id)
        if resumed:
            log.info("resuming %d unfinished export job(s)", len(resumed))
        self._evict(keep=set())

    def request_stop(self) -> None:
        """Begin stopping (from a signal handler): running retrievals are aborted, rows kept resumable."""
        self._stopping.set()
        with self._lock:
            for cancel in self._cancels.values():
                cancel.cancel()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers; a job cut short stays queued / retrieving / zipping for the next start."""
        self.request_stop()
        if not self.pool.stop(timeout):
            log.warning("export workers still busy after %.0fs; their jobs resume at next start", timeout)

    # -- requests --------------------------------------------------------------

    def request(self, raw_accession: str | None) -> Answer:
        """POST: serve a fresh archive, join a running job, or start one (after routing)."""
        accession = validate(raw_accession)
        job = ExportJob.get_or_none(ExportJob.accession == accession)
        early = self._existing(job)
        if early is not None:
            return early
        fields, refusal = self._route(accession, job)
        if refusal is not None:
            return refusal
        with write_transaction():
            job = ExportJob.get_or_none(ExportJob.accession == accession)
            early = self._existing(job)
            if early is not None:
                return early
            now = utcnow()
            values = dict(
                state=QUEUED,
                failure="",
                message="",
                received=0,
                instances=0,
                bytes=0,
                file_name="",
                study_updated_at=None,
                updated_at=now,
                started_at=None,
                finished_at=None,
            )
            values.update(fields)
            if fields.get("failure"):
                values.update(state=FAILED, finished_at=now)
            if job is None:
                job = ExportJob.create(accession=accession, created_at=now, **values)
            else:
                for key, value in values.items():
                    setattr(job, key, value)
                job.save()
        if job.state == FAILED:
            log.info("export %s: %s", accession, job.message)
            return Answer(Kind.FAILED, accession, job_json(job), job.message)
        self.pool.submit(job.id)
        return Answer(Kind.PENDING, accession, job_json(job))

    def fetch(self, raw_accession: str | None) -> Answer:
        """GET: the archive when ready, else the job; a stale archive is rebuilt."""
        accession = validate(raw_accession)
        job = ExportJob.get_or_none(ExportJob.accession == accession)
        if job is None:
            return Answer(
                Kind.NOT_FOUND,
                accession,
                message=f"no archive prepared for accession number {accession!r}; "
                f"POST /accessions/{quote(accession, safe='')}/zip first",
            )
        if job.state == FAILED:
            kind = Kind.NOT_FOUND if job.failure == NOT_FOUND else Kind.FAILED
            return Answer(kind, accession, job_json(job), job.message)
        early = self._existing(job)
        if early is not None:
            return early
        # Ready but out of date (the study changed, or the file was evicted): rebuild.
        return self.request(accession)

    def _existing(self, job: ExportJob | None) -> Answer | None:
        """The answer an existing job gives by itself, or None when a (re)build is due."""
        if job is None:
            return None
        if job.state in ACTIVE_STATES:
            return Answer(Kind.PENDING, job.accession, job_json(job))
        if job.state == READY:
            path = archive.archive_path(self.export_dir, job.accession)
            version = archive.local_version(job.accession)
            fresh = (
                path.is_file()
                and version.updated_at is not None
                and job.study_updated_at is not None
                and version.updated_at <= job.study_updated_at
            )
            return Answer(Kind.READY, job.accession, job_json(job), path=path) if fresh else None
        return None  # failed: a new request tries again

    def _route(self, accession: str, job: ExportJob | None) -> tuple[dict, Answer | None]:
        """Where the study comes from: the job's row fields, or a 404 answer."""
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

    def _forget(self, job: ExportJob | None) -> None:
        """Drop the row (and archive) of an accession that no longer exists anywhere."""
        if job is None:
            return
        with write_transaction():
            ExportJob.delete().where(
                (ExportJob.id == job.id) & ExportJob.state.not_in(ACTIVE_STATES)
            ).execute()
        archive.archive_path(self.export_dir, job.accession).unlink(missing_ok=True)

    # -- running a job ---------------------------------------------------------

    def _run(self, job_id: int) -> None:
        job = ExportJob.get_or_none(ExportJob.id == job_id)
        if job is None or job.state not in ACTIVE_STATES or self._stopping.is_set():
            return
        started = time.monotonic()
        job.started_at = job.started_at or utcnow()
        cancel = retrieve.Cancel()
        with self._lock:
            self._cancels[job_id] = cancel
        try:
            # A job interrupted while zipping had verified its retrieval already.
            if not (job.remote and job.state != ZIPPING and self._retrieve(job, cancel)):
                self._zip(job)
        except _Stopped:
            log.info("export %s: interrupted in state %s; resumes at next start", job.accession, job.state)
        except _Failed as exc:
            self._finish(job, FAILED, failure=exc.failure, message=str(exc))
            log.warning("export %s failed: %s", job.accession, exc)
        except retrieve.RetrieveError as exc:
            if self._stopping.is_set():
                log.info("export %s: retrieval interrupted; resumes at next start", job.accession)
                return
            self._finish(job, FAILED, failure=REMOTE, message=str(exc))
            log.warning("export %s failed: %s", job.accession, exc)
        except Exception as exc:
            if self._stopping.is_set():
                log.info("export %s: interrupted (%s); resumes at next start", job.accession, exc)
                return
            log.exception("export %s failed", job.accession)
            self._finish(job, FAILED, failure=INTERNAL, message=f"could not prepare the archive: {exc}")
        else:
            log.info(
                "export %s ready: %d instances, %d bytes%s in %.2fs",
                job.accession,
                job.instances,
                job.bytes,
                f" (retrieved from {job.remote})" if job.remote else "",
                time.monotonic() - started,
            )
        finally:
            with self._lock:
                self._cancels.pop(job_id, None)

    def _save(self, job: ExportJob, **values) -> None:
        for key, value in values.items():
            setattr(job, key, value)
        job.updated_at = utcnow()
        with write_transaction():
            job.save()

    def _finish(self, job: ExportJob, state: str, **values) -> None:
        self._save(job, state=state, finished_at=utcnow(), **values)

    def _retrieve(self, job: ExportJob, cancel: retrieve.Cancel) -> bool:
        """Retrieve the job's studies while archiving them as they arrive; True once published.

        False means the retrieval is verified but the archive written on the
        way does not match the index (an instance went away meanwhile): the
        caller builds it again from the store.
        """
        remote = self.settings.remote_by_name(job.remote)
        if remote is None:
            raise _Failed(INTERNAL, f"remote {job.remote!r} is no longer configured")
        own_ae = self.settings.dicom.ae_title
        self._save(job, state=RETRIEVING, received=0, bytes=0)
        uids = [u for u in job.study_uids.split("\\") if u]
        if not uids:
            matches = retrieve.find_studies(remote, own_ae, job.accession)
            if not matches:
                raise _Failed(
                    NOT_FOUND,
                    f"there is no study with accession number {job.accession!r}: "
                    f"{retrieve.describe(remote)} has none",
                )
            uids = [m.study_uid for m in matches]
            counts = [m.expected for m in matches]
            expected = sum(counts) if all(c is not None for c in counts) else None  # type: ignore[misc]
            self._save(job, study_uids="\\".join(uids), expected=expected)

        # The archive is written while the instances arrive (compression
        # overlaps the transfer); it is published only if the retrieval is complete.
        finished = threading.Event()
        zipped: dict = {"bytes": 0}

        def zipper() -> None:
            try:
                zipped["result"] = archive.write_temp(
                    archive.arrivals(
                        self.ctx.store, job.accession, uids, finished, should_stop=self._stopping.is_set
                    ),
                    self.export_dir,
                    self.settings.export.compression,
                    on_bytes=lambda n: zipped.__setitem__("bytes", n),
                    should_stop=self._stopping.is_set,
                    fsync=self.settings.storage.fsync,
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the job thread
                zipped["error"] = exc

        thread = threading.Thread(target=zipper, name=f"export-zip-{job.id}", daemon=True)
        thread.start()
        try:
            have = self._transfer(job, remote, uids, cancel, zipped)
            # Read before the zipper is told to finish: whatever is indexed
            # later makes this archive stale instead of silently missing.
            version = archive.local_version(job.accession)
            self._save(job, state=ZIPPING)
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
        path = archive.publish(temp, self.export_dir, job.accession, fsync=self.settings.storage.fsync)
        self._ready(job, path, size, count, version)
        return True

    def _transfer(self, job: ExportJob, remote, uids: list[str], cancel, zipped: dict) -> int:
        """C-MOVE / C-GET each study, updating the row; verify the count; return it."""
        own_ae = self.settings.dicom.ae_title
        announced = 0
        failed = 0
        statuses: set[int] = set()
        last = 0.0
        for uid in uids:
            done_before = job.received

            def on_progress(p: retrieve.Progress, base: int = done_before) -> None:
                nonlocal last
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S:
                    last = now
                    self._save(job, received=base + p.completed + p.warning, bytes=zipped["bytes"])

            if remote.retrieve == "get":
                progress = retrieve.get_study(
                    remote, own_ae, uid, self.ctx.ingest, on_progress=on_progress, cancel=cancel
                )
            else:
                progress = retrieve.move_study(remote, own_ae, uid, on_progress=on_progress, cancel=cancel)
            announced += progress.completed + progress.failed + progress.warning
            failed += progress.failed
            if progress.status:
                statuses.add(progress.status)
            self._save(job, received=done_before + progress.completed + progress.warning)
            if self._stopping.is_set():
                raise _Stopped
        have = archive.count_instances(uids)
        expected = max(job.expected or 0, announced)
        self._save(job, received=have)
        if self._stopping.is_set():
            raise _Stopped
        if have == 0 or have < expected or failed:
            operation = "C-GET" if remote.retrieve == "get" else "C-MOVE"
            status = ", ".join(f"0x{code:04X}" for code in sorted(statuses)) or "0x0000"
            raise _Failed(
                PARTIAL,
                f"retrieved {have} of {expected} instances of accession {job.accession!r} from "
                f"{retrieve.describe(remote)} ({operation} status {status}, {failed} sub-operations "
                "failed); no archive was made",
            )
        return have

    def _ready(self, job: ExportJob, path: Path, size: int, count: int, version: archive.Version) -> None:
        if not job.remote:
            job.received = count
        self._finish(
            job,
            READY,
            bytes=size,
            instances=count,
            file_name=path.name,
            study_updated_at=version.updated_at,
            message="",
            failure="",
        )
        self._evict(keep={path})

    def _zip(self, job: ExportJob) -> None:
        # The version is read before the instances are listed: an instance
        # arriving meanwhile makes the archive stale rather than silently missing.
        version = archive.local_version(job.accession)
        if not version.held:
            raise _Failed(NOT_FOUND, f"there is no study with accession number {job.accession!r}")
        self._save(job, state=ZIPPING, bytes=0)
        try:
            path, size, count = archive.build(
                self.ctx.store,
                self.export_dir,
                job.accession,
                self.settings.export.compression,
                on_bytes=lambda n: self._save(job, bytes=n),
                should_stop=self._stopping.is_set,
                fsync=self.settings.storage.fsync,
            )
        except InterruptedError:
            raise _Stopped from None
        self._ready(job, path, size, count, version)

    def _evict(self, keep: set[Path]) -> None:
        s = self.settings.export
        removed = archive.evict(self.export_dir, s.max_total_bytes, s.max_age_days, keep)
        if not removed:
            return
        names = [p.name for p in removed]
        with write_transaction():
            ExportJob.delete().where(ExportJob.file_name.in_(names) & (ExportJob.state == READY)).execute()
        log.info("evicted %d archive(s) from %s: %s", len(removed), self.export_dir, ", ".join(names))


class _Stopped(Exception):
    """The node is stopping: leave the row as it is, to be resumed."""


class _Failed(Exception):
    def __init__(self, failure: str, message: str) -> None:
        super().__init__(message)
        self.failure = failure
