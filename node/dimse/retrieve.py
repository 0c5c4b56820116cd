"""C-MOVE / C-GET plumbing: the sub-operation loop and the progress it reports.

pynetdicom's own Q/R retrieve SCP only sends data sets it re-encodes, on an
association it opens itself.  The node sends the stored bytes through the one
sending path (:mod:`node.remotes.sender`), so the EVT_C_MOVE / EVT_C_GET
handlers drive the sub-operations themselves and yield :class:`Progress`;
the wire layer's ``RetrieveService`` turns each into a C-MOVE-RSP /
C-GET-RSP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..index.query import QueryError, matching_instances
from ..remotes.sender import Outgoing, outgoing, store_one
from ..statuses import (
    CANCELLED,
    PENDING,
    SUBOPS_ALL_FAILED,
    SUBOPS_WARNING,
    SUCCESS,
    UNABLE_TO_PROCESS,
)
from ..uids import valid_uid
from .identifiers import root_of, to_query
from .wire.retrieve_service import MAX_SUBOPERATIONS

log = logging.getLogger(__name__)

PENDING_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Progress:
    """One C-MOVE / C-GET response: pending (with remaining) or final."""

    status: int
    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: tuple[str, ...] = ()
    comment: str = ""
    transcoded: int = 0  # of the sub-operations, how many were sent converted (for the log line)

    @property
    def pending(self) -> bool:
        return self.status == PENDING


def refused(status: int, reason: str, *, failed: int = 0) -> Progress:
    """A final failure before (or instead of) any sub-operation, naming the reason."""
    return Progress(status, failed=failed, comment=reason)


@dataclass
class _Tally:
    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    transcoded: int = 0

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def progress(self, status: int, comment: str = "") -> Progress:
        return Progress(
            status,
            self.remaining,
            self.completed,
            self.failed,
            self.warning,
            tuple(self.failed_uids),
            comment,
            self.transcoded,
        )

    def final(self) -> Progress:
        if not self.failed and not self.warning:
            return self.progress(SUCCESS)
        if self.failed == self.total:
            return self.progress(SUBOPS_ALL_FAILED, "no instance could be sent")
        return self.progress(SUBOPS_WARNING, f"{self.failed} of {self.total} instances failed")


def too_many(items: Sequence[Outgoing], what: str) -> Progress | None:
    """A refusal when more instances match than a response can count, else None."""
    if len(items) <= MAX_SUBOPERATIONS:
        return None
    return refused(UNABLE_TO_PROCESS, f"{len(items)} instances match; at most {MAX_SUBOPERATIONS} per {what}")


def suboperations(event, assoc, items: Sequence[Outgoing], *, what: str) -> Iterator[Progress]:
    """C-STORE *items* on *assoc*, yielding pending Progress as they go and then the final one.

    Pending responses are optional (PS3.4 C.4.2.1.5): one goes out after the
    first instance and then at most every PENDING_INTERVAL_S, since encoding
    and sending one per instance costs a good part of a small instance's time.

    A C-CANCEL ends with status Cancel; a lost association counts what was
    not sent as failed.
    """
    tally = _Tally(len(items))
    last_pending = 0.0
    for item in items:
        if event.is_cancelled:
            yield tally.progress(CANCELLED, f"{what} cancelled by the requester")
            return
        if not assoc.is_established:
            break
        _store(event, assoc, item, tally, what)
        now = time.monotonic()
        if tally.remaining and now - last_pending >= PENDING_INTERVAL_S:
            last_pending = now
            yield tally.progress(PENDING)
    if tally.remaining:  # the association went away under us
        lost = [item.sop_uid for item in items[len(items) - tally.remaining :]]
        tally.failed += len(lost)
        tally.failed_uids.extend(lost)
    yield tally.final()


def _store(event, assoc, item: Outgoing, tally: _Tally, what: str) -> None:
    """One C-STORE sub-operation, counted in *tally*."""
    sent = store_one(
        assoc, item, originator_ae=event.assoc.requestor.ae_title, originator_id=event.request.MessageID
    )
    if sent.transcoded_to:
        tally.transcoded += 1
    if sent.status == SUCCESS:
        tally.completed += 1
    elif sent.ok:
        tally.warning += 1
    else:
        tally.failed += 1
        tally.failed_uids.append(item.sop_uid)
        reason = sent.error or f"status 0x{sent.status:04X}"
        log.warning("%s of %s failed: %s", what, item.sop_uid, reason)


class Shortfall(Exception):
    """Raised by an arriving-items iterator that ends short: *missing* UIDs, *count* instances in all."""

    def __init__(self, message: str, count: int, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.count = count
        self.missing = tuple(missing)


def suboperations_as_they_arrive(
    event, assoc, items: Iterator[Outgoing], *, what: str, expected: int | None
) -> Iterator[Progress]:
    """C-STORE *items* as an iterator hands them over (a retrieval on a miss), then the final Progress.

    *expected* is the announced count (None: not known), used for the
    remaining count of pending responses.  An iterator that raises
    :class:`Shortfall` adds its missing instances as failed sub-operations:
    the final status is then 0xB000 (or 0xA702 if nothing went), never Success.
    """
    tally = _Tally(max(expected or 0, 1))
    last_pending = 0.0
    shortfall: Shortfall | None = None
    lost = False
    try:
        for item in items:
            if event.is_cancelled:
                yield tally.progress(CANCELLED, f"{what} cancelled by the requester")
                return
            if not assoc.is_established:
                lost = True
                break
            tally.total = max(tally.total, tally.completed + tally.failed + tally.warning + 1)
            _store(event, assoc, item, tally, what)
            now = time.monotonic()
            if now - last_pending >= PENDING_INTERVAL_S:
                last_pending = now
                yield tally.progress(PENDING)
    except Shortfall as exc:
        shortfall = exc
    done = tally.completed + tally.failed + tally.warning
    if shortfall is not None:
        tally.failed += len(shortfall.missing) or max(1, shortfall.count - done)
        tally.failed_uids.extend(shortfall.missing)
    elif lost:
        tally.failed += max(1, (expected or 0) - done)
    tally.total = tally.completed + tally.failed + tally.warning
    final = tally.final()
    yield tally.progress(final.status, str(shortfall)) if shortfall is not None else final


def requested_study(event) -> tuple[str, str | None, str | None] | None:
    """(study, series, instance) UIDs a C-MOVE / C-GET identifier names one by one, or None.

    What a retrieval on a miss can look for upstream: one Study Instance
    UID, and below it at most one series and one instance (no lists, no wildcards).
    """
    try:
        identifier = event.identifier
    except Exception:  # noqa: BLE001 - requested_instances reports it
        return None
    values: list[str | None] = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = identifier.get(keyword)
        if value is None or value == "":
            values.append(None)
        elif isinstance(value, str):
            values.append(value.strip())
        else:
            return None  # a list of UIDs
    study, series, sop = values
    if study is None or not all(valid_uid(v) for v in values if v is not None):
        return None
    return study, series, sop


def requested_instances(event, store) -> list[Outgoing]:
    """The stored instances a C-MOVE / C-GET identifier names; QueryError if it cannot be answered."""
    try:
        identifier = event.identifier
    except Exception as exc:  # pydicom raises many types on a broken identifier
        raise QueryError(f"the identifier cannot be decoded: {exc}") from None
    query, _ = to_query(identifier, root_of(event.request.AffectedSOPClassUID), infer_level=True)
    refs = matching_instances(query)
    store.note_reads(ref.path for ref in refs)  # the bounded store's least-recently-used order
    return [outgoing(store, ref) for ref in refs]


def summary(progress: Progress) -> str:
    """The outcome of a retrieve in a log line."""
    text = (
        f"0x{progress.status:04X}: {progress.completed} completed, {progress.failed} failed, "
        f"{progress.warning} warning"
    )
    if progress.transcoded:
        text += f", {progress.transcoded} transcoded"
    return f"{text} ({progress.comment})" if progress.comment else text
