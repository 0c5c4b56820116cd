"""Read-through queries: a query of the one query engine, also asked of the read-through remotes.

Given a :class:`~node.index.query.Query` (as C-FIND and QIDO-RS parse it),
:class:`ReadThrough` asks every ``[[remotes]] read_through = true`` remote
at once by C-FIND (the one C-FIND SCU, :func:`node.remotes.retrieve.find`),
all within ``[cache].query_timeout``, and :func:`merge` puts their answers
after the local matches:

- one match per UID (the level's unique key): a UID the node matches itself
  is answered from the index; one that several upstreams hold comes once,
  from the first remote in config order that holds it, its empty attributes
  filled from the others;
- each upstream match carries InstanceAvailability (0008,0056): NEARLINE,
  or ONLINE when the node holds that UID after all (but its copy did not
  match the keys);
- an upstream that is down, refuses, or does not finish in time makes the
  answer partial: the reason is kept in :attr:`Upstream.shortfalls` (and
  logged with the remote's name), what it sent before the deadline is kept.

``[cache].query`` decides when remotes are asked: ``"on-miss"`` (default)
only when nothing matches locally, ``"always"``, or ``"never"``.  Queries
are forwarded at the STUDY and SERIES levels, and at the IMAGE level when
the study is named by one StudyInstanceUID (PATIENT level never: a patient
is not a thing a cache retrieves).

No protocol types here: the doors (``node/dimse/find.py``,
``node/dicomweb/search.py``) turn the merged matches into their answers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..config import Remote, Settings
from ..index import catalog
from ..index import query as engine
from ..remotes.retrieve import Cancel, RetrieveError, describe, find
from ..uids import valid_uid

log = logging.getLogger(__name__)

POLICIES = ("on-miss", "always", "never")
AVAILABILITY = "InstanceAvailability"
ONLINE = "ONLINE"
NEARLINE = "NEARLINE"
# An upstream answering more than this many matches is cut off (the answer is then partial):
# a query must not let one remote fill the node's memory.
MAX_UPSTREAM_MATCHES = 10_000
# UIDs per look-up of which upstream matches the node holds (bound parameters per statement).
_HELD_BATCH = 500
_BINARY_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "AT"}
_KINDS = {a.keyword: a.match for a in catalog.ATTRIBUTES}


@dataclass(frozen=True)
class Shortfall:
    """A remote whose answer is missing or incomplete, and why."""

    remote: str
    reason: str

    def __str__(self) -> str:
        return f"{self.remote}: {self.reason}"


@dataclass
class Upstream:
    """What the read-through remotes answered: matches (one per UID, in remote order) and shortfalls."""

    matches: list[dict[str, object]] = field(default_factory=list)
    shortfalls: list[Shortfall] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.shortfalls)


def forwardable(query: engine.Query) -> bool:
    """True when *query* is one the read-through remotes are asked (see the module docstring)."""
    if query.level in ("STUDY", "SERIES"):
        return query.root != "PATIENT_STUDY_ONLY" or query.level == "STUDY"
    if query.level == "IMAGE":
        study = query.filters.get("StudyInstanceUID", "").strip()
        return bool(study) and "\\" not in study and valid_uid(study)
    return False


def identifier(query: engine.Query) -> Dataset:
    """The Study Root C-FIND identifier asking *query* of a remote.

    Carries every matching key as written and asks back every key the node
    returns (unique keys of each level down to the query's, filters, return
    keys); values that are not ASCII are sent in UTF-8 (ISO_IR 192).
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = query.level
    text = []
    for keyword in engine.returned_keys(query):
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        vr = dictionary_VR(keyword)
        if vr == "SQ":
            continue
        value = query.filters.get(keyword, "").strip()
        if vr in _BINARY_VRS:
            ds.add(DataElement(tag, vr, None))  # the engine cannot match these; ask them back
            continue
        ds.add(DataElement(tag, vr, value))
        text.append(value)
    if any(not v.isascii() for v in text):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _value(keyword: str, raw: object) -> object:
    """An upstream element's value as the engine returns that attribute (see engine.run)."""
    kind = _KINDS.get(keyword)
    if raw is None or raw == "":
        return [] if kind == catalog.LIST else ""
    values = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
    if kind == catalog.LIST:
        return sorted({str(v).strip() for v in values if str(v).strip()})
    if kind in (catalog.COUNT, catalog.INT):
        try:
            return int(str(values[0]).strip())
        except ValueError:
            return ""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return raw
    return "\\".join(str(v).strip() for v in values)


def to_match(query: engine.Query, found: Dataset) -> dict[str, object] | None:
    """One upstream identifier as a match of *query* (the engine's keys), or None when it is unusable.

    Unusable: no valid UID for its level or one above (those the query names
    are filled in when the remote leaves them out), or a UID key that
    contradicts the query (a remote that ignores StudyInstanceUID must not
    slip another study into the answer).
    """
    match: dict[str, object] = {}
    try:
        for keyword in engine.returned_keys(query):
            match[keyword] = _value(keyword, found.get(keyword))
    except Exception as exc:  # pydicom raises many types on an undecodable element
        log.debug("read-through: an upstream match cannot be decoded (%s); left out", exc)
        return None
    for keyword in engine.unique_keys(query):
        if _KINDS.get(keyword) != catalog.UID:
            continue  # PatientID (Patient Root)
        given = query.filters.get(keyword, "").strip()
        if not match.get(keyword) and given and "\\" not in given:
            match[keyword] = given  # an upper level's UID the remote did not repeat
        if not valid_uid(str(match.get(keyword, ""))):
            return None
    for keyword, wanted in query.filters.items():
        if _KINDS.get(keyword) != catalog.UID or wanted.strip() in ("", "*"):
            continue
        allowed = {u.strip() for u in wanted.split("\\") if u.strip()}
        if str(match.get(keyword, "")) not in allowed:
            return None
    match[AVAILABILITY] = NEARLINE
    return match


class _Asker(threading.Thread):
    """Asks one remote; collects its matches until it ends, fails or is cancelled."""

    def __init__(self, remote: Remote, calling_ae: str, query: engine.Query, timeout: float, cancel: Cancel):
        super().__init__(name=f"read-through-{remote.name}", daemon=True)
        self.remote = remote
        self.calling_ae = calling_ae
        self.query = query
        self.timeout = timeout
        self.cancel = cancel
        self.matches: list[dict[str, object]] = []
        self.error = ""
        self.started_at = time.monotonic()
        self.finished_at: float | None = None

    def run(self) -> None:
        try:
            for found in find(
                self.remote,
                self.calling_ae,
                identifier(self.query),
                timeout=self.timeout,
                cancel=self.cancel,
                release_later=True,
            ):
                match = to_match(self.query, found)
                if match is not None:
                    self.matches.append(match)
                if len(self.matches) >= MAX_UPSTREAM_MATCHES:
                    self.error = f"more than {MAX_UPSTREAM_MATCHES} matches; the rest left out"
                    break
        except RetrieveError as exc:
            self.error = _without_name(str(exc), self.remote)
        except Exception as exc:  # the remote sent something pynetdicom could not take: say so, go on
            log.exception("read-through query at %s failed", describe(self.remote))
            self.error = str(exc) or type(exc).__name__
        finally:
            self.finished_at = time.monotonic()


def _without_name(reason: str, remote: Remote) -> str:
    """*reason* without the leading name of the remote (each shortfall is shown beside the name)."""
    for prefix in (f"{describe(remote)}: ", f"{describe(remote)} ", f"remote {remote.name!r}: "):
        if reason.startswith(prefix):
            return reason[len(prefix) :]
    return reason


class Asking:
    """The read-through remotes being asked one query, all at once, until a common deadline."""

    def __init__(self, query: engine.Query, remotes: Sequence[Remote], calling_ae: str, timeout: float):
        self.query = query
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._cancel = Cancel()
        self._askers = [_Asker(r, calling_ae, query, timeout, self._cancel) for r in remotes]
        for asker in self._askers:
            asker.start()
        self._result: Upstream | None = None

    def result(self) -> Upstream:
        """Wait (at most until the deadline) and merge the remotes' answers; stragglers are aborted."""
        if self._result is not None:
            return self._result
        for asker in self._askers:
            asker.join(max(0.0, self.deadline - time.monotonic()))
        # A remote still answering at the deadline is cut off; one still
        # associating ends by itself (its association timeout is the same).
        self._cancel.cancel()
        upstream = Upstream()
        unique = catalog.unique_key(self.query.level).keyword
        by_uid: dict[str, dict[str, object]] = {}
        for asker in self._askers:
            name = asker.remote.name
            done = asker.finished_at is not None
            matches = list(asker.matches)
            if not done:
                reason = f"no complete answer within {self.timeout:g} s ({len(matches)} matches by then)"
            else:
                reason = asker.error
            elapsed = ((asker.finished_at or time.monotonic()) - asker.started_at) * 1000
            if reason:
                upstream.shortfalls.append(Shortfall(name, reason))
                log.warning(
                    "read-through %s query at %s: %s; the answer is partial",
                    self.query.level,
                    describe(asker.remote),
                    reason,
                )
            else:
                log.info(
                    "read-through %s query at %s: %d matches in %.0f ms",
                    self.query.level,
                    describe(asker.remote),
                    len(matches),
                    elapsed,
                )
            for match in matches:
                uid = str(match[unique])
                kept = by_uid.get(uid)
                if kept is None:
                    by_uid[uid] = match
                    upstream.matches.append(match)
                    continue
                # Two upstreams, one UID: fill in what the first left empty.
                for keyword, value in match.items():
                    if kept.get(keyword) in ("", None, []) and value not in ("", None, []):
                        kept[keyword] = value
        self._result = upstream
        return upstream


@dataclass(frozen=True)
class ReadThrough:
    """The node's read-through policy: which remotes, when, how long."""

    remotes: tuple[Remote, ...]
    calling_ae: str
    policy: str = "on-miss"
    timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadThrough:
        return cls(
            settings.read_through_remotes(),
            settings.dicom.ae_title,
            settings.cache.query,
            settings.cache.query_timeout,
        )

    def applies(self, query: engine.Query) -> bool:
        """True when the remotes may be asked *query* at all (policy, remotes, level)."""
        return self.policy != "never" and bool(self.remotes) and forwardable(query)

    def ask(self, query: engine.Query) -> Asking:
        """Start asking every read-through remote *query* (without its limit and offset)."""
        return Asking(
            dataclasses.replace(query, limit=None, offset=0), self.remotes, self.calling_ae, self.timeout
        )


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _local_uids(query: engine.Query, uids: Sequence[str]) -> set[str]:
    """Those of *uids* (unique keys at the query's level) that are local matches of *query*."""
    key = catalog.unique_key(query.level).keyword
    found: set[str] = set()
    for batch in _batches(uids, _HELD_BATCH):
        filters = {**query.filters, key: "\\".join(batch)}
        asked = engine.Query(query.level, filters, (), root=query.root, fuzzy=query.fuzzy)
        found.update(str(m[key]) for m in engine.run(asked))
    return found


def upstream_only(query: engine.Query, matches: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """*matches* without the UIDs the node matches itself; those it holds but did not match are ONLINE."""
    if not matches:
        return []
    key = catalog.unique_key(query.level).keyword
    uids = [str(m[key]) for m in matches]
    matched = _local_uids(query, uids)
    rest = [m for m in matches if str(m[key]) not in matched]
    held = _local_uids(engine.Query(query.level, {}, root="STUDY"), [str(m[key]) for m in rest])
    for match in rest:
        if str(match[key]) in held:
            match[AVAILABILITY] = ONLINE
    return rest


def _has_local(query: engine.Query) -> bool:
    """True when *query* has any local match (its limit and offset aside)."""
    asked = dataclasses.replace(query, return_keys=(), limit=1, offset=0, newest_first=False)
    with closing(engine.run(asked)) as found:
        return next(found, None) is not None


def local_count(query: engine.Query) -> int:
    """How many local matches *query* has (its limit and offset aside)."""
    asked = dataclasses.replace(query, return_keys=(), limit=None, offset=0, newest_first=False)
    return sum(1 for _ in engine.run(asked))


class Merge:
    """One answer: the local matches of *query*, then those only the read-through remotes hold.

    The merged answer is the local matches in the engine's order followed by
    the upstream-only matches, and *query*'s offset and limit apply to that
    whole sequence (the upstream part starts where the local one ends).
    With ``[cache].query = "always"`` the remotes are asked at once, while
    the index is read; with ``"on-miss"`` only once the page turns out empty
    and nothing matches locally at all.
    """

    def __init__(self, query: engine.Query, read_through: ReadThrough) -> None:
        self.query = query
        self.read_through = read_through
        applies = read_through.applies(query)
        self._asking = read_through.ask(query) if applies and read_through.policy == "always" else None
        self._applies = applies
        self._settled = False
        self.upstream: Upstream | None = None

    @property
    def shortfalls(self) -> list[Shortfall]:
        """The remotes whose answers are missing or incomplete (once settled)."""
        return self.upstream.shortfalls if self.upstream else []

    def settle(self, local_given: int) -> Upstream | None:
        """Decide whether the remotes are (or were) asked, given the page's local matches; wait for them.

        Returns their answer, or None when they are not part of this one.
        """
        if self._settled:
            return self.upstream
        self._settled = True
        query = self.query
        if self._asking is not None:
            self.upstream = self._asking.result()
        elif (
            self._applies
            and self.read_through.policy == "on-miss"
            and not local_given
            and (not query.offset or not _has_local(query))
        ):
            self.upstream = self.read_through.ask(query).result()
        return self.upstream

    def matches(self, local: Iterable[dict[str, object]]) -> Iterator[dict[str, object]]:
        """*local* (one page of the query: offset and limit applied), then the upstream-only matches."""
        query = self.query
        given = 0
        for match in local:
            given += 1
            yield match
        if query.limit is not None and given >= query.limit:
            return  # the page is full: what the remotes hold comes on a later one
        upstream = self.settle(given)
        if upstream is None:
            return
        # Where the local matches end within the merged sequence.
        local_total = query.offset + given if given or not query.offset else local_count(query)
        skip = max(0, query.offset - local_total)
        rest = upstream_only(query, upstream.matches)
        end = None if query.limit is None else skip + query.limit - given
        yield from rest[skip:end]
