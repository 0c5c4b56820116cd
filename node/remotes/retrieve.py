"""Retrieve studies from a remote: C-FIND by accession number, then C-MOVE or C-GET.

- :func:`find_studies` / :func:`find_study`: STUDY-level C-FIND (Study
  Root) keyed on AccessionNumber or StudyInstanceUID, asking for
  NumberOfStudyRelatedInstances, so that the caller knows which studies to
  pull and how many instances to expect; :func:`list_instances`: the SOP
  Instance UIDs a study holds there (what a partial retrieval misses).
- :func:`move_study`: C-MOVE of one study to this node's own AE title; the
  instances arrive through the node's C-STORE SCP (and so the one ingest
  path), tagged with the remote they came from.
- :func:`get_study`: C-GET of one study; the C-STOREs come back on the same
  association and go through :func:`node.ingest.ingest_file` here.
- :func:`transfer`: the one retrieval engine: each study by the remote's
  ``retrieve`` method, counts summed into a :class:`Transfer`.  The ZIP
  export (by accession prefix) and the read-through cache (by Study Instance
  UID, node/remotes/read_through.py) both retrieve through it.

Failures raise :class:`RetrieveError`, whose message names the remote and the
DICOM status.  A :class:`Cancel` lets another thread abort a retrieval (at
shutdown); the caller can resume it later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import build_context, build_role, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from ..config import Remote
from ..ingest import Ingest, Source
from ..statuses import SUCCESS, is_pending, is_warning, status_text
from .sender import Peer, SendError, open_association

log = logging.getLogger(__name__)

# A big study's sub-operations can keep the remote busy between responses.
RETRIEVE_DIMSE_TIMEOUT_S = 600.0
# Transfer syntaxes accepted for C-GET's C-STOREs: stored as received.
GET_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


class RetrieveError(Exception):
    """The remote could not be reached, refused, or the retrieval was cut short."""


@dataclass(frozen=True)
class StudyMatch:
    """A study the remote holds for the accession, and its announced instance count."""

    study_uid: str
    expected: int | None


@dataclass
class Progress:
    """Sub-operation counts from the remote's C-MOVE / C-GET responses."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None
    status: int | None = None

    @property
    def total(self) -> int:
        return self.completed + self.failed + self.warning + (self.remaining or 0)


class Cancel:
    """Lets another thread stop a retrieval: aborts the association in use."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._assocs: set = set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        self._event.set()
        with self._lock:
            for assoc in list(self._assocs):
                assoc.abort()

    def attach(self, assoc) -> None:
        with self._lock:
            self._assocs.add(assoc)
        if self.cancelled:
            assoc.abort()

    def detach(self, assoc) -> None:
        with self._lock:
            self._assocs.discard(assoc)


def peer_of(remote: Remote) -> Peer:
    return Peer(remote.ae_title, remote.host, remote.port)


def describe(remote: Remote) -> str:
    """How messages name a remote: its config name and its address."""
    return f"remote {remote.name!r} ({peer_of(remote)})"


def _associate(remote: Remote, calling_ae: str, contexts, cancel: Cancel | None, **kwargs):
    try:
        assoc = open_association(peer_of(remote), calling_ae, contexts, send_only=False, **kwargs)
    except SendError as exc:
        raise RetrieveError(f"remote {remote.name!r}: {exc}") from None
    assoc.dimse_timeout = RETRIEVE_DIMSE_TIMEOUT_S
    if cancel is not None:
        cancel.attach(assoc)
        if cancel.cancelled:
            raise RetrieveError(f"retrieval from {describe(remote)} interrupted (node stopping)")
    return assoc


def _close(assoc, cancel: Cancel | None) -> None:
    if cancel is not None:
        cancel.detach(assoc)
    if assoc.is_established:
        assoc.release()


def _comment(status: Dataset) -> str:
    comment = str(status.get("ErrorComment", "") or "").strip()
    return f": {comment}" if comment else ""


def find(
    remote: Remote,
    calling_ae: str,
    identifier: Dataset,
    *,
    timeout: float | None = None,
    cancel: Cancel | None = None,
    release_later: bool = False,
    what: str = "",
) -> Iterator[Dataset]:
    """C-FIND *identifier* at *remote* (Study Root); yields each matching identifier.

    The one C-FIND SCU: the export's accession look-up and the read-through
    query (:mod:`node.cache.query`) both ask through it.  *timeout* bounds
    the connection, the association and each response; *cancel* lets
    another thread abort the association.  *release_later*: the association
    is released on another thread, so that the answer is complete as soon as
    the final response is in (the A-RELEASE round trip is a third of a
    query's time on loopback).  Raises RetrieveError naming the remote and
    the DICOM status (and *what* was asked) when the remote cannot be reached
    or refuses.
    """
    model = StudyRootQueryRetrieveInformationModelFind
    limits = {} if timeout is None else {"timeout": timeout}
    assoc = _associate(remote, calling_ae, [build_context(model)], cancel, **limits)
    if timeout is not None:
        assoc.dimse_timeout = timeout
    try:
        for status, found in assoc.send_c_find(identifier, model):
            if not status or "Status" not in status:
                if cancel is not None and cancel.cancelled:
                    raise RetrieveError(f"C-FIND at {describe(remote)} interrupted")
                raise RetrieveError(
                    f"{describe(remote)}: no C-FIND response (association aborted or timed out)"
                )
            code = int(status.Status)
            if is_pending(code):
                if found is not None:
                    yield found
            elif code != SUCCESS:
                asked = f" for {what}" if what else ""
                raise RetrieveError(
                    f"{describe(remote)} refused the C-FIND{asked}: "
                    f"status {status_text(code)}{_comment(status)}"
                )
    finally:
        if release_later:
            if cancel is not None:
                cancel.detach(assoc)  # a later cancel must not abort a release under way
            threading.Thread(target=_close, args=(assoc, None), name="c-find-release", daemon=True).start()
        else:
            _close(assoc, cancel)


def _find(remote: Remote, calling_ae: str, query: Dataset, what: str) -> list[Dataset]:
    """Every identifier a Study Root C-FIND of *query* returns; RetrieveError naming *what* on failure."""
    return list(find(remote, calling_ae, query, what=what))


def _text(identifier: Dataset, keyword: str) -> str:
    return str(identifier.get(keyword, "") or "").strip()


def _count(identifier: Dataset) -> int | None:
    count = identifier.get("NumberOfStudyRelatedInstances")
    try:
        return int(count) if count not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _study_query(**keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    query.NumberOfStudyRelatedInstances = ""
    return query


def find_studies(remote: Remote, calling_ae: str, accession: str) -> list[StudyMatch]:
    """The studies *remote* holds for *accession* (exact match), with their instance counts."""
    matches: dict[str, StudyMatch] = {}
    for identifier in _find(
        remote, calling_ae, _study_query(AccessionNumber=accession), f"accession {accession!r}"
    ):
        uid = _text(identifier, "StudyInstanceUID")
        found = str(identifier.get("AccessionNumber", accession) or "").strip()
        if uid and found == accession:
            matches[uid] = StudyMatch(uid, _count(identifier))
    return list(matches.values())


def find_study(remote: Remote, calling_ae: str, study_uid: str) -> StudyMatch | None:
    """The study *study_uid* if *remote* holds it (with its instance count), else None."""
    query = _study_query(StudyInstanceUID=study_uid)
    for identifier in _find(remote, calling_ae, query, f"study {study_uid}"):
        if _text(identifier, "StudyInstanceUID") == study_uid:
            return StudyMatch(study_uid, _count(identifier))
    return None


def list_instances(remote: Remote, calling_ae: str, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> Series Instance UID of what *remote* holds in the study (IMAGE-level C-FIND)."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    found = _find(remote, calling_ae, query, f"the instances of study {study_uid}")
    return {
        _text(i, "SOPInstanceUID"): _text(i, "SeriesInstanceUID") for i in found if _text(i, "SOPInstanceUID")
    }


def _sent(send, remote: Remote, *args):
    """Responses of a C-MOVE / C-GET; an association lost before the request is a RetrieveError."""
    try:
        yield from send(*args)
    except RuntimeError as exc:  # pynetdicom: "association ... must be established"
        raise RetrieveError(f"{describe(remote)}: association lost ({exc})") from None


def _study_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def _follow(
    responses,
    remote: Remote,
    operation: str,
    on_progress: Callable[[Progress], None] | None,
    cancel: Cancel | None,
) -> Progress:
    """Read C-MOVE / C-GET responses into a Progress; raise RetrieveError on failure."""
    progress = Progress()
    for status, _identifier in responses:
        if not status or "Status" not in status:
            if cancel is not None and cancel.cancelled:
                raise RetrieveError(f"{operation} from {describe(remote)} interrupted (node stopping)")
            raise RetrieveError(
                f"{describe(remote)}: no {operation} response (association aborted or timed out)"
            )
        code = int(status.Status)
        progress.status = code
        for attr, keyword in (
            ("completed", "NumberOfCompletedSuboperations"),
            ("failed", "NumberOfFailedSuboperations"),
            ("warning", "NumberOfWarningSuboperations"),
            ("remaining", "NumberOfRemainingSuboperations"),
        ):
            value = status.get(keyword)
            if value not in (None, ""):
                setattr(progress, attr, int(value))
        if is_pending(code):
            if on_progress:
                on_progress(progress)
            continue
        if code != SUCCESS and not is_warning(code):
            raise RetrieveError(
                f"{describe(remote)} refused the {operation}: status {status_text(code)}"
                f"{_comment(status)} ({progress.completed} completed, {progress.failed} failed)"
            )
    if progress.status is None:
        raise RetrieveError(f"{describe(remote)}: no {operation} response")
    if on_progress:
        on_progress(progress)
    return progress


def move_study(
    remote: Remote,
    own_ae: str,
    study_uid: str,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: Cancel | None = None,
) -> Progress:
    """C-MOVE the study *study_uid* from *remote* to *own_ae* (this node)."""
    model = StudyRootQueryRetrieveInformationModelMove
    assoc = _associate(remote, own_ae, [build_context(model)], cancel)
    try:
        responses = _sent(assoc.send_c_move, remote, _study_identifier(study_uid), own_ae, model)
        return _follow(responses, remote, "C-MOVE", on_progress, cancel)
    finally:
        _close(assoc, cancel)


def get_study(
    remote: Remote,
    own_ae: str,
    study_uid: str,
    ingest: Ingest,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: Cancel | None = None,
) -> Progress:
    """C-GET the study *study_uid* from *remote*; each instance goes through the ingest path."""
    model = StudyRootQueryRetrieveInformationModelGet
    source = Source("retrieve", calling_aet=remote.ae_title, remote=remote.name)

    def on_store(event) -> int:
        outcome = ingest.ingest_file(Path(event.dataset_path), source, take=True)
        if not outcome.ok:
            log.warning("C-GET from %s: instance refused: %s", remote.name, outcome.reason)
        return SUCCESS if outcome.ok else outcome.failure_code

    contexts = [build_context(model)]
    storage = [cx.abstract_syntax for cx in StoragePresentationContexts][: 128 - len(contexts)]
    contexts += [build_context(uid, GET_TRANSFER_SYNTAXES) for uid in storage]
    roles = [build_role(uid, scp_role=True) for uid in storage]
    assoc = _associate(
        remote, own_ae, contexts, cancel, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        responses = _sent(assoc.send_c_get, remote, _study_identifier(study_uid), model)
        return _follow(responses, remote, "C-GET", on_progress, cancel)
    finally:
        _close(assoc, cancel)


@dataclass
class Transfer:
    """What the remote reported for the studies of one retrieval."""

    operation: str  # "C-MOVE" or "C-GET"
    announced: int = 0  # completed + failed + warning sub-operations
    failed: int = 0
    statuses: set[int] = field(default_factory=set)

    def shortfall(self, have: int, expected: int) -> str:
        """How a retrieval that fell short is described: counts, the remote's statuses."""
        status = ", ".join(f"0x{code:04X}" for code in sorted(self.statuses)) or "0x0000"
        return (
            f"retrieved {have} of {expected} instances ({self.operation} status {status}, "
            f"{self.failed} sub-operations failed)"
        )


def transfer(
    remote: Remote,
    own_ae: str,
    study_uids: list[str],
    ingest: Ingest,
    *,
    on_progress: Callable[[int], None] | None = None,
    cancel: Cancel | None = None,
) -> Transfer:
    """Retrieve each study from *remote* (C-MOVE to *own_ae*, or C-GET); report instances received.

    *on_progress* is given the running count of instances the remote says it
    sent (completed + warning); it is called from this thread.
    """
    result = Transfer("C-GET" if remote.retrieve == "get" else "C-MOVE")
    received = 0
    for uid in study_uids:
        base = received

        def progressed(p: Progress, base: int = base) -> None:
            if on_progress:
                on_progress(base + p.completed + p.warning)

        if remote.retrieve == "get":
            p = get_study(remote, own_ae, uid, ingest, on_progress=progressed, cancel=cancel)
        else:
            p = move_study(remote, own_ae, uid, on_progress=progressed, cancel=cancel)
        received = base + p.completed + p.warning
        result.announced += p.completed + p.failed + p.warning
        result.failed += p.failed
        if p.status:
            result.statuses.add(p.status)
        if cancel is not None and cancel.cancelled:
            break
    return result
