"""Read-through: a study asked of this node but not held here is retrieved from the remote that has it.

The doors (WADO-RS in node/web/wado.py, C-MOVE and C-GET in node/dimse/)
call :meth:`ReadThrough.open` on a miss and serve what it yields:

1. **Locate**: every remote with ``read_through = true`` is asked at once
   (a STUDY-level C-FIND by Study Instance UID, bounded by
   ``LOCATE_TIMEOUT_S``); the first in config order that holds the study is
   the source.  None holds it -> :class:`NotFound`; none could answer ->
   :class:`Unavailable` naming them (refused, or timed out).
2. **One retrieval per study**: a job of kind ``retrieve`` keyed by the
   Study Instance UID (the one job mechanism, visible in ``GET /jobs``), so
   concurrent requests, from any process, share it.  Its handler runs the
   one retrieval engine (:func:`node.remotes.retrieve.transfer`, which the
   ZIP export uses too) into the one ingest path, while an IMAGE-level C-FIND
   lists what the study should hold; fewer instances held than listed or
   announced fails the job as ``partial`` with the counts and the missing
   UIDs in its payload.
3. **Served as it arrives**: :class:`Arrivals` yields each instance of the
   requested level once it is committed.  The ingest path's after-commit
   listener hands over the row id of each instance of a watched study (no
   index scan per arrival); a rescan of the level every ``RESCAN_S`` and at
   the end catches what arrived through another process.  The end of the
   job ends the iteration: done -> the iteration just stops; failed ->
   :class:`Incomplete` (after what did arrive) or :class:`Unavailable`.

The retrieved instances stay: the next request finds them in the index.
While a study's retrieval runs, or after it failed, its local copy is not
trusted alone (:meth:`ReadThrough.pending`): the request joins the job or
starts it again, so a half-retrieved study is never served as if whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..config import Remote
from ..context import NodeContext
from ..dicomweb.instances import NotFound, StoredInstance, find_instances, instances_by_id
from ..index import jobs
from ..index.jobs import ACTIVE_STATES, DONE, FAILED, PARTIAL, QUEUED, REMOTE, Job
from ..ingest import Ingested
from ..jobs.kinds import Failed, Interrupted, Progress
from ..jobs.runner import JobRunner
from . import retrieve

log = logging.getLogger("node.read_through")

KIND = "retrieve"
LOCATE_TIMEOUT_S = 10.0  # all read-through remotes together, for the C-FIND that locates a study
RESCAN_S = 1.0  # arrivals through another process are seen at least this often
IDLE_LIMIT_S = 600.0  # no arrival and no end of the job for this long: the upstream is stuck
JOB_POLL_S = 0.05
WORKERS = 8  # retrievals one process runs at once
MAX_MISSING = 10_000  # missing UIDs kept in a job's payload


class Unavailable(Exception):
    """No read-through remote could be asked (refused or unreachable, or timed out: *timeout*)."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class Incomplete(Exception):
    """The retrieval ended short: *received* of *expected*; *missing* the UIDs not held at the level."""

    def __init__(self, message: str, received: int, expected: int, missing: list[str]) -> None:
        super().__init__(message)
        self.received = received
        self.expected = expected
        self.missing = missing


@dataclass(frozen=True)
class Located:
    remote: Remote
    expected: int | None


def locate(remotes: tuple[Remote, ...], calling_ae: str, study_uid: str) -> Located | None:
    """The first of *remotes* (config order) holding *study_uid*, all asked at once; None if none has it.

    Raises :class:`Unavailable` when none holds it and some could not answer.
    """
    if not remotes:
        return None
    pool = ThreadPoolExecutor(max_workers=len(remotes), thread_name_prefix="locate")
    futures = {pool.submit(retrieve.find_study, r, calling_ae, study_uid): r for r in remotes}
    _, late = wait(futures, timeout=LOCATE_TIMEOUT_S)
    pool.shutdown(wait=False, cancel_futures=True)
    errors: list[str] = []
    for future, remote in futures.items():  # config order
        if future in late:
            errors.append(f"{retrieve.describe(remote)} did not answer within {LOCATE_TIMEOUT_S:.0f}s")
            continue
        try:
            match = future.result()
        except retrieve.RetrieveError as exc:
            errors.append(str(exc))
            continue
        if match is not None:
            return Located(remote, match.expected)
    if errors:
        raise Unavailable(
            f"study {study_uid} is not held here and could not be looked for: " + "; ".join(errors),
            timeout=bool(late) and len(late) == len(errors),
        )
    return None


class _Watcher:
    """One request's view of a study's arrivals: the row ids handed over by the ingest listener."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self._ids: list[int] = []
        self._lock = threading.Lock()

    def arrived(self, instance_id: int) -> None:
        with self._lock:
            self._ids.append(instance_id)
        self.wake.set()

    def take(self) -> list[int]:
        with self._lock:
            ids, self._ids = self._ids, []
        return ids


class ReadThrough:
    """Retrieval on a miss for one node: locating, the ``retrieve`` job kind, arrivals."""

    def __init__(self, ctx: NodeContext, runner: JobRunner) -> None:
        self.ctx = ctx
        self.runner = runner
        self._lock = threading.Lock()
        self._watchers: dict[str, set[_Watcher]] = {}

    def install(self) -> None:
        """Register the ``retrieve`` kind and the listener that reports arrivals."""
        self.runner.register(KIND, RetrieveJobs(self), concurrency=WORKERS, max_attempts=1)
        self.ctx.ingest.add_listener(self._on_ingest)

    @property
    def enabled(self) -> bool:
        return bool(self.ctx.settings.read_through_remotes())

    # -- the doors' side -------------------------------------------------------------

    def pending(self, study_uid: str) -> Job | None:
        """The study's retrieval if it is under way or failed (its local copy alone is not to be served)."""
        if not self.enabled:
            return None
        job = jobs.find(KIND, study_uid)
        return job if job is not None and (job.state in ACTIVE_STATES or job.state == FAILED) else None

    def open(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> Arrivals:
        """Join or start the study's retrieval; the instances at the level, as they arrive.

        Raises :class:`NotFound` (no read-through remote holds the study) or
        :class:`Unavailable` before anything is retrieved.
        """
        settings = self.ctx.settings
        watcher = self._watch(study_uid)
        try:
            job = jobs.find(KIND, study_uid)
            # Finished since the caller looked, and the level is held: serve what it retrieved.
            finished = job is not None and job.state == DONE and _held(study_uid, series_uid, sop_uid)
            if not finished and (job is None or job.state not in ACTIVE_STATES):
                located = locate(settings.read_through_remotes(), settings.dicom.ae_title, study_uid)
                if located is None:
                    names = ", ".join(r.name for r in settings.read_through_remotes())
                    raise NotFound(f"study {study_uid} not found (here, nor on {names})")
                payload = {"remote": located.remote.name, "missing": []}
                job, created = self.runner.submit(KIND, study_uid, payload, total=located.expected)
                if created:
                    log.info(
                        "study %s not held: retrieving it from %s (job %d)",
                        study_uid,
                        retrieve.describe(located.remote),
                        job.id,
                    )
        except BaseException:
            self._unwatch(study_uid, watcher)
            raise
        return Arrivals(self, job.id, watcher, study_uid, series_uid, sop_uid)

    # -- arrivals ----------------------------------------------------------------------

    def _watch(self, study_uid: str) -> _Watcher:
        watcher = _Watcher()
        with self._lock:
            self._watchers.setdefault(study_uid, set()).add(watcher)
        return watcher

    def _unwatch(self, study_uid: str, watcher: _Watcher) -> None:
        with self._lock:
            watchers = self._watchers.get(study_uid)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[study_uid]

    def _on_ingest(self, event: Ingested) -> None:
        outcome = event.outcome
        if not outcome.ok or outcome.instance_id is None or not self._watchers:
            return
        with self._lock:
            watchers = list(self._watchers.get(outcome.study_uid, ()))
        for watcher in watchers:
            watcher.arrived(outcome.instance_id)

    # -- the job ---------------------------------------------------------------------

    def run(self, job: Job, progress: Progress) -> None:
        """Retrieve the study *job* is keyed by (the body of the ``retrieve`` kind)."""
        study_uid = job.key or ""
        name = job.data.get("remote", "")
        remote = self.ctx.settings.remote_by_name(name)
        if remote is None:
            raise Failed(REMOTE, f"remote {name!r} is no longer configured")
        own_ae = self.ctx.settings.dicom.ae_title
        started = time.monotonic()
        cancel = retrieve.Cancel()
        progress.on_cancel(cancel.cancel)
        try:
            result = retrieve.transfer(
                remote,
                own_ae,
                [study_uid],
                self.ctx.ingest,
                on_progress=lambda n: progress.update(done=n),
                cancel=cancel,
            )
        except retrieve.RetrieveError as exc:
            if progress.cancelled:
                raise Interrupted from None
            raise Failed(REMOTE, str(exc)) from None
        if progress.cancelled:
            raise Interrupted
        held = {i.sop_uid for i in _held(study_uid)}
        announced = max(result.announced, job.total or 0)
        listed: dict[str, str] | None = None
        if result.failed or len(held) < announced or job.total is None:
            # Short, or no count to check against: ask what the study holds there, to name what is missing.
            # (Not asked on the happy path: an IMAGE-level C-FIND beside the transfer slowed it.)
            try:
                listed = retrieve.list_instances(remote, own_ae, study_uid)
            except retrieve.RetrieveError as exc:
                log.warning("study %s: could not list its instances on %s: %s", study_uid, name, exc)
        expected = max(len(listed or {}), announced)
        missing = [[sop, series] for sop, series in sorted((listed or {}).items()) if sop not in held]
        failed = max(len(missing), result.failed, expected - len(held))
        progress.update(
            done=len(held),
            total=expected,
            failed=failed,
            payload={"missing": missing[:MAX_MISSING], "listed": listed is not None},
        )
        if failed or not held:
            raise Failed(PARTIAL, f"{result.shortfall(len(held), expected)} of study {study_uid} from {name}")
        log.info(
            "study %s retrieved from %s: %d instances in %.2fs",
            study_uid,
            name,
            len(held),
            time.monotonic() - started,
        )


def _held(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[StoredInstance]:
    try:
        return find_instances(study_uid, series_uid, sop_uid)
    except NotFound:
        return []


class Arrivals:
    """The instances of one level of a study being retrieved, yielded once each as they are held.

    Iterating blocks between arrivals (run it in a worker thread).  It ends
    when the job ends: quietly when it is done (:class:`NotFound` if the
    level turned out not to be in the study), else with :class:`Incomplete`
    or :class:`Unavailable`.  :meth:`close` (or the end) stops watching.
    """

    def __init__(
        self,
        owner: ReadThrough,
        job_id: int,
        watcher: _Watcher,
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
    ) -> None:
        self.owner = owner
        self.job_id = job_id
        self.level = (study_uid, series_uid, sop_uid)
        self._watcher = watcher
        self._sent: set[str] = set()
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.owner._unwatch(self.level[0], self._watcher)

    def _fresh(self, found: list[StoredInstance]) -> list[StoredInstance]:
        new = [i for i in found if i.sop_uid not in self._sent]
        self._sent.update(i.sop_uid for i in new)
        return new

    def __iter__(self) -> Iterator[StoredInstance]:
        try:
            yield from self._follow()
        finally:
            self.close()

    def _follow(self) -> Iterator[StoredInstance]:
        study_uid, series_uid, sop_uid = self.level
        # What is held already (a job joined late) goes out first.
        yield from self._fresh(_held(*self.level))
        if sop_uid is not None and self._sent:
            return
        rescan = time.monotonic() + RESCAN_S
        last_news = time.monotonic()
        while True:
            self._watcher.wake.wait(JOB_POLL_S)
            self._watcher.wake.clear()
            now = time.monotonic()
            new = self._fresh(instances_by_id(self._watcher.take(), *self.level))
            if now >= rescan:
                new += self._fresh(_held(*self.level))
                rescan = now + RESCAN_S
            if new:
                last_news = now
                yield from new
                if sop_uid is not None:
                    return  # the one instance asked for is here
                continue
            job = jobs.get(self.job_id)
            if job is None or job.state not in ACTIVE_STATES:
                break
            if self.owner.runner.stopping and job.state == QUEUED:
                # Given back to the queue by this node's shutdown: it resumes at the next start.
                raise Unavailable(f"retrieval of study {study_uid} interrupted: the node is stopping")
            if now - last_news > IDLE_LIMIT_S:
                raise Unavailable(
                    f"retrieval of study {study_uid} (job {self.job_id}): nothing arrived for "
                    f"{IDLE_LIMIT_S:.0f}s",
                    timeout=True,
                )
        yield from self._fresh(_held(*self.level))
        self._end(job)

    def _end(self, job: Job | None) -> None:
        study_uid, series_uid, sop_uid = self.level
        if job is not None and job.state == DONE:
            if not self._sent:
                what = f"instance {sop_uid}" if sop_uid else f"series {series_uid}"
                raise NotFound(f"{what} not found in study {study_uid} (here or upstream)")
            return
        if job is None:
            raise Unavailable(f"the retrieval of study {study_uid} was removed before it ended")
        message = f"job {job.id}: {job.message or job.state}"
        if job.failure == REMOTE and not self._sent:
            raise Unavailable(message)
        missing = [
            sop
            for sop, series in job.data.get("missing", [])
            if (series_uid is None or series == series_uid) and (sop_uid is None or sop == sop_uid)
        ]
        if self._sent and (sop_uid is not None or (job.data.get("listed") and not missing)):
            return  # what was asked for is whole, though the study is not
        expected = len(self._sent) + len(missing)
        if series_uid is None and sop_uid is None:
            expected = max(expected, job.total or 0)
        raise Incomplete(message, len(self._sent), max(expected, len(self._sent) + 1), missing)


class RetrieveJobs:
    """The ``retrieve`` job kind: runs on whichever worker claims the job."""

    def __init__(self, owner: ReadThrough) -> None:
        self.owner = owner

    def run(self, job: Job, progress: Progress) -> None:
        self.owner.run(job, progress)
