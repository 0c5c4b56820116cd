"""The "send" job kind: C-STORE named studies, series and instances to a remote.

Queued by ``POST /remotes/{name}/store`` and ``dicom-node send``; run by any
node's workers through the one sending path (node/remotes/sender.py), one
association per page of instances, the stored bytes as received.  The
remote's answer for each instance is judged as the forwarder judges it:

- success or warning: sent (``done``);
- a permanent refusal (SOP class, authorisation, data set, no presentation
  context): ``failed``, named in the job's ``refused`` list;
- another failure status: sent again at the next attempt, after a back-off;
- no answer (remote down, association refused or lost) or out of
  resources: the attempt stops where it was and the job is retried from
  there after a back-off (1 s doubling to 5 min), :data:`MAX_ATTEMPTS`
  times in all.

A job with any instance refused in the end is ``failed`` (failure
``refused``) with the counts; otherwise ``done``.  The payload keeps the
request (``remote``, ``studies``, ``series``, ``instances``), the id of the
last instance of the first pass that was answered (``cursor``), the
instances to try again (``retry``) and the first refusals (``refused``), so
that a stopped or taken-over job resumes where it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import Remote, Settings
from ..context import NodeContext
from ..index import jobs, selection
from ..index.jobs import REMOTE, Job
from ..index.selection import Held, Selection
from ..jobs.kinds import Failed, Interrupted, Progress, Retry
from ..jobs.runner import JobRunner
from ..statuses import is_out_of_resources, status_text
from ..uids import valid_uid
from .forwarder import backoff_s, has_context, is_accepted, is_permanent
from .sender import (
    NoAcceptedContext,
    Peer,
    SendError,
    contexts_for,
    open_association,
    outgoing,
    store_one,
    transcoded_note,
)

log = logging.getLogger("node.send")


def describe(remote: Remote) -> str:
    """How messages name a remote: its config name and its address (as retrieval's do)."""
    return f"remote {remote.name!r} ({Peer(remote.ae_title, remote.host, remote.port)})"


KIND = "send"
PAGE = 500  # instances per association
MAX_ATTEMPTS = 10  # ~14 minutes of back-off in all before a remote that stays down fails the job
MAX_LISTED = 20  # refusals named in the payload
REFUSED = "refused"  # failure: the remote refused some instances for good


class SendRequestError(ValueError):
    """A send request that cannot be queued; the message says why."""

    def __init__(self, message: str, *, unknown_remote: bool = False) -> None:
        super().__init__(message)
        self.unknown_remote = unknown_remote


def remote_named(settings: Settings, name: str) -> Remote:
    """The remote called *name*, or a :class:`SendRequestError` listing the known ones."""
    remote = settings.remote_by_name(name)
    if remote is None:
        known = ", ".join(r.name for r in settings.remotes) or "none configured"
        raise SendRequestError(f"no remote named {name!r} (known: {known})", unknown_remote=True)
    return remote


def check_selection(wanted: Selection) -> None:
    """Refuse a selection that names nothing, a malformed UID, or something the node does not hold."""
    if wanted.empty:
        raise SendRequestError(
            "nothing to send: name StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID values"
        )
    bad = [u for u in (*wanted.studies, *wanted.series, *wanted.instances) if not valid_uid(u)]
    if bad:
        raise SendRequestError(f"not a valid UID: {', '.join(repr(u) for u in bad[:10])}")
    missing = selection.unknown(wanted)
    if missing:
        raise SendRequestError(f"not held by this node: {', '.join(missing[:10])}")


def queue_send(runner: JobRunner | None, settings: Settings, remote_name: str, wanted: Selection) -> Job:
    """Check and queue a send job of *wanted* to the remote *remote_name*; return the job.

    Without a *runner* (a command that only queues) a running node's workers
    find the job at their next poll.
    """
    remote = remote_named(settings, remote_name)
    check_selection(wanted)
    total, size = selection.count(wanted)
    payload = {"remote": remote.name, **wanted.as_payload(), "bytes_total": size}
    job, _ = (
        runner.submit(KIND, None, payload, total=total)
        if runner
        else jobs.submit(KIND, None, payload, total=total)
    )
    log.info("send job %d queued: %d instance(s), %d bytes to %s", job.id, total, size, remote.name)
    return job


@dataclass
class _Tally:
    """The counts of the job so far (the row's, then this run's), and what is left to retry."""

    done: int
    failed: int
    bytes: int
    cursor: int
    retry: dict[int, None]  # instance ids, in order
    refused: list[dict]
    transient: str = ""  # the last refusal that will be tried again

    def refuse(self, item: Held, status: int | None, error: str) -> None:
        self.failed += 1
        if len(self.refused) < MAX_LISTED:
            self.refused.append({"sop_uid": item.sop_uid, "status": status, "error": error})


class _Outage(Exception):
    """The remote stopped answering (or is out of resources): retry this attempt later."""


class SendJobs:
    """The ``send`` job kind."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def details(self, job: Job) -> dict:
        """The send's own fields in ``GET /jobs``."""
        data = job.data
        return {
            "remote": data.get("remote"),
            "studies": data.get("studies", []),
            "series": data.get("series", []),
            "instances": data.get("instances", []),
            "bytes_total": data.get("bytes_total"),
            "to_retry": len(data.get("retry", [])),
            "refused": data.get("refused", []),
        }

    def run(self, job: Job, progress: Progress) -> None:
        data = job.data
        remote = self.ctx.settings.remote_by_name(data.get("remote", ""))
        if remote is None:
            raise Failed("config", f"remote {data.get('remote')!r} is no longer configured")
        tally = _Tally(
            job.done,
            job.failed,
            job.bytes,
            data.get("cursor", 0),
            dict.fromkeys(data.get("retry", [])),
            list(data.get("refused", [])),
        )
        try:
            if not data.get("swept"):
                # The first pass: every selected instance in id order, from the cursor on.
                progress.update(phase="sending")
                wanted = Selection.from_payload(data)
                while rows := selection.page(wanted, tally.cursor, PAGE):
                    self._send(remote, rows, tally, progress, first_pass=True)
                # What the selection held once gone through (instances may have come or gone).
                found = tally.done + tally.failed + len(tally.retry)
                if found == 0:
                    raise Failed(jobs.NOT_FOUND, "the instances to send are no longer stored")
                progress.update(total=found, payload={"swept": True})
            elif tally.retry:
                # A later attempt: the instances refused for now, again.
                progress.update(phase="retrying")
                rows = selection.by_ids(list(tally.retry))
                for gone in set(tally.retry) - {r.id for r in rows}:
                    del tally.retry[gone]
                    tally.failed += 1
                last = job.attempts >= MAX_ATTEMPTS
                self._send(remote, rows, tally, progress, first_pass=False, last_attempt=last)
        except _Outage as exc:
            self._report(tally, progress)
            raise Retry(REMOTE, f"{describe(remote)}: {exc}", backoff_s(job.attempts)) from None
        except SendError as exc:
            self._report(tally, progress)
            raise Retry(REMOTE, f"remote {remote.name!r}: {exc}", backoff_s(job.attempts)) from None
        self._report(tally, progress)
        if tally.retry:
            raise Retry(
                REMOTE,
                f"{describe(remote)} refused {len(tally.retry)} instance(s) for now ({tally.transient})",
                backoff_s(job.attempts),
            )
        sent = f"{tally.done} instance(s) sent to {describe(remote)}"
        if tally.failed:
            reasons = "; ".join(f"{r['sop_uid']}: {r['error']}" for r in tally.refused[:3])
            raise Failed(REFUSED, f"{sent}, {tally.failed} refused or no longer stored ({reasons})")
        progress.update(message=sent)
        log.info("send job %d done: %s, %d bytes", job.id, sent, tally.bytes)

    def _report(self, tally: _Tally, progress: Progress) -> None:
        progress.update(
            done=tally.done,
            failed=tally.failed,
            bytes=tally.bytes,
            payload={"cursor": tally.cursor, "retry": list(tally.retry), "refused": tally.refused},
        )

    def _send(
        self,
        remote: Remote,
        rows: list[Held],
        tally: _Tally,
        progress: Progress,
        *,
        first_pass: bool,
        last_attempt: bool = False,
    ) -> None:
        """C-STORE *rows* over one association, settling each in *tally*; raise _Outage if cut short."""
        items = [outgoing(self.ctx.store, r) for r in rows]
        settings = self.ctx.settings
        try:
            assoc = open_association(
                Peer(remote.ae_title, remote.host, remote.port),
                settings.dicom.ae_title,
                contexts_for(items),
                max_pdu=settings.dicom.max_pdu,
            )
        except NoAcceptedContext as exc:
            for row in rows:
                self._settle(tally, row, first_pass)
                tally.refuse(row, None, str(exc))
            self._report(tally, progress)
            return
        progress.on_cancel(assoc.abort)
        try:
            for row, item in zip(rows, items, strict=True):
                if progress.cancelled:
                    raise Interrupted
                if not item.path.exists():
                    self._settle(tally, row, first_pass)
                    tally.refuse(row, None, "the instance file is missing from the store")
                    continue
                sent = store_one(assoc, item)
                if progress.cancelled:
                    raise Interrupted  # its answer may be lost to the abort: sent again on resume
                if (
                    sent.status is None
                    and not sent.refused
                    and (not assoc.is_established or has_context(assoc, item))
                ):
                    raise _Outage(sent.error or "association lost")
                if sent.status is not None and is_out_of_resources(sent.status):
                    raise _Outage(f"out of resources, status {status_text(sent.status)}")
                self._settle(tally, row, first_pass)
                if is_accepted(sent):
                    tally.done += 1
                    tally.bytes += row.size
                elif sent.status is None:
                    tally.refuse(row, None, sent.error or "no presentation context accepted")
                else:
                    error = status_text(sent.status) + (f": {sent.error}" if sent.error else "")
                    if is_permanent(sent.status) or last_attempt:
                        tally.refuse(row, sent.status, error)
                    else:
                        tally.retry[row.id] = None
                        tally.transient = f"{row.sop_uid}: {error}"
                self._report(tally, progress)
        finally:
            ending = "released" if assoc.is_established and not progress.cancelled else "aborted"
            if progress.cancelled:
                # Aborted by the cancel, perhaps still under way in another thread: releasing
                # as well would wait out the ACSE timeout for an answer that cannot come.
                assoc.abort()
            elif assoc.is_established:
                try:
                    assoc.release()
                except Exception:  # noqa: BLE001 - closing a dead link must not fail
                    assoc.abort()
            log.info(
                "association %s to %s: %d instance(s)%s; %s",
                settings.dicom.ae_title,
                remote.name,
                len(rows),
                transcoded_note(assoc),
                ending,
            )

    @staticmethod
    def _settle(tally: _Tally, row: Held, first_pass: bool) -> None:
        """*row* is answered: the first pass moves past it, a retry takes it off the list."""
        if first_pass:
            tally.cursor = row.id
        else:
            tally.retry.pop(row.id, None)
