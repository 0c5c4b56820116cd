"""The one ingest path: every door (C-STORE, STOW-RS, import, retrieval) ends here.

:meth:`Ingest.ingest_file` takes a Part-10 file and follows Orthanc's order
of a store (``ServerContext::Store``):

1. filters: the file is one whole data set (:mod:`node.integrity`), its
   header parses and carries valid UIDs, and there is room for it
   (:mod:`node.space`); a refusal changes nothing.  With
   ``[storage].transcode_to`` set, the received file is then converted
   (:func:`node.transcode.convert_for_storage`) and the converted file is
   what the rest of the path checks, stores and indexes; one that cannot be
   converted is stored as received;
2. the file is written: renamed into place, a file it replaces kept aside
   (:meth:`node.store.InstanceStore.place`); its fsync and its folder's
   run in the background while 3. writes the rows;
3. it is indexed in one transaction, with the *index hooks* (e.g. the
   forwarding outbox row, which must commit with the instance); an instance
   filed under another series, study or patient is refused unless
   ``[storage].duplicates = "replace"``.  If indexing fails, the new file is
   removed (or the replaced one put back) before the failure is answered;
4. after the commit, the *listeners* are told (wake-ups, metrics, cache
   invalidation), with the :class:`Outcome`, the :class:`Source` and the
   time it took; they are told of failures too.

Success is returned only after the file is fsynced in place and the index
row committed, in that order: the commit waits for the fsyncs, so after a
crash every committed row names a file on disk.  The
:class:`Outcome` carries what a DICOM status and a DICOMweb FailureReason
are both derived from.

The node is assembled with one :class:`Ingest` (``NodeContext.ingest``);
whoever assembles it (``node/server.py``, the CLI) registers hooks and
listeners on it.
"""

from __future__ import annotations

import enum
import functools
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag

from . import integrity
from .index import catalog, faults
from .index.ingest_rows import Conflict, Entry, conflict, file_instance, lookup
from .index.models import Instance, utcnow
from .space import SpaceGuard
from .statuses import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
)
from .store import InstanceStore, UnsafePath
from .transcode import convert_for_storage
from .uids import valid_uid

log = logging.getLogger(__name__)

REJECT = "reject"
REPLACE = "replace"
DUPLICATE_POLICIES = (REJECT, REPLACE)


class Status(enum.Enum):
    STORED = "stored"
    REPLACED = "replaced"
    FAILED = "failed"


@dataclass(frozen=True)
class Source:
    """Which door an instance came in by."""

    door: str  # "dimse", "stow", "import" or "retrieve"
    calling_aet: str = ""
    remote: str = ""  # for "retrieve": the remote's name (not forwarded back to it)

    @property
    def label(self) -> str:
        return f"{self.door}:{self.remote}" if self.remote else self.door


@dataclass(frozen=True)
class Outcome:
    """What became of one instance."""

    status: Status
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    reason: str = ""
    failure_code: int = 0  # DICOM status / DICOMweb FailureReason; 0 on success
    instance_id: int | None = None
    size: int = 0
    # A short form of *reason* for a DIMSE ErrorComment (64 characters); "" to use *reason*.
    comment: str = ""
    # "replace" moved the instance (or its series or study) away from here.
    moved_from_study: str = ""
    moved_from_series: str = ""
    # The ingest path already logged this refusal at WARNING (a door need not say it again).
    logged: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED


@dataclass(frozen=True)
class Ingested:
    """What a listener is told after each ingest: the outcome, where it came from, how long it took."""

    outcome: Outcome
    source: Source
    seconds: float


class Rejected(Exception):
    """The data set cannot be stored; carries the failure code and a message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# Called inside the indexing transaction for every stored instance, so that
# what it writes (e.g. a forwarding outbox row) commits with the instance.
IndexHook = Callable[[Instance, Source], None]
# Called after the commit (or the refusal) of every instance; must not raise.
Listener = Callable[[Ingested], None]

_CHARSET = 0x00080005
_TRANSFER_SYNTAX = 0x00020010
# Defer values this large: we only read the header (never pixel data).
_DEFER = 16 * 1024
# Stores of one SOP Instance UID are serialised (file placement and its row
# must not interleave); this many locks are shared by hash.
_STRIPES = 64


def read_header(path: Path | BinaryIO) -> Dataset:
    """Parse a Part-10 file (path or open file) up to its pixel data; raise Rejected if it is not DICOM."""
    try:
        ds = dcmread(path, stop_before_pixels=True, defer_size=_DEFER)
    except InvalidDicomError:
        raise Rejected(
            CANNOT_UNDERSTAND, "not a DICOM Part-10 file (no 'DICM' prefix or file meta)"
        ) from None
    except Exception as exc:  # pydicom raises many types on garbage input
        raise Rejected(CANNOT_UNDERSTAND, f"data set cannot be parsed: {exc}") from None
    return ds


def check_whole(f: BinaryIO, collect: frozenset[int] | None = None) -> integrity.Meta:
    """Raise Rejected (0xC000) unless the open file holds one whole data set (see node.integrity).

    0xC000 "cannot understand", not 0xA900 "does not match the SOP class":
    the bytes do not form a data set at all, whatever its IOD, and sending
    the same bytes again cannot succeed.  *collect*: see
    :func:`node.integrity.check_file`.
    """
    try:
        return integrity.check_file(f, collect)
    except integrity.Incomplete as exc:
        message = str(exc)
        if message.startswith("not a DICOM Part-10 file"):
            message = "not a DICOM Part-10 file (no 'DICM' prefix or file meta)"
        raise Rejected(CANNOT_UNDERSTAND, message) from None
    except OSError as exc:
        raise Rejected(PROCESSING_FAILURE, f"cannot read the received file: {exc}") from None


def header_from(meta: integrity.Meta) -> Dataset:
    """The data set of the elements the integrity walk picked up (``check_whole(f, HEADER_TAGS)``).

    Parsing the file again with pydicom was the largest cost of a small
    instance's ingest, for attributes the walk has just passed over.  The
    elements stay raw: :class:`_Reader` decodes the common cases itself and
    pydicom converts the rest on access, as it does after ``dcmread``.
    """
    little = meta.transfer_syntax != integrity.EXPLICIT_BIG
    implicit = meta.transfer_syntax == integrity.IMPLICIT_LITTLE
    raw = {
        tag: RawDataElement(
            BaseTag(tag), vr.decode("ascii") if vr else None, len(value), value, 0, vr is None, little
        )
        for tag, (vr, value) in (meta.elements or {}).items()
    }
    ds = Dataset(raw)
    charset = raw.get(_CHARSET)
    encoding = convert_encodings(convert_raw_data_element(charset).value) if charset else default_encoding
    ds.set_original_encoding(implicit, little, encoding)
    return ds


class _Reader:
    """Reads the indexed attributes of one header, cheaply.

    pydicom's element conversion (keyword lookup, value objects, charset
    handling) was the largest cost of indexing a small instance.  Values are
    decoded straight from the raw bytes: ASCII for the VRs that are ASCII by
    definition, the data set's character set when it is a single, non-ISO
    2022 one (every common case, ISO_IR 192 and ISO_IR 144 included), and
    pydicom's full conversion otherwise.
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        # Elements by tag, as pydicom holds them (raw until converted): its
        # get_item() turns every key into a Tag first, which cost more than
        # the lookup itself over the forty attributes of a header.
        self._elements = ds._dict
        raw = ds.get_item(_CHARSET)
        charset = raw.value if raw is not None else None
        if isinstance(charset, bytes):
            charset = charset.decode("ascii", "replace")
        elif charset is not None and not isinstance(charset, str):  # already a list of terms
            charset = "\\".join(charset)
        terms = [t.strip() for t in str(charset or "").split("\\")]
        self.charset = "\\".join(terms) if any(terms) else ""
        if len(terms) == 1 and "2022" not in terms[0]:
            self.codec: str | None = python_encoding.get(terms[0] or "ISO_IR 6", None)
        else:
            self.codec = None
        if self.codec == "iso8859":  # the default repertoire is ASCII; be lenient
            self.codec = "latin-1"

    def _raw(self, tag: int) -> bytes | str | None:
        elem = self._elements.get(tag)
        return None if elem is None else elem.value

    def ascii(self, tag: int) -> str:
        """A value whose VR is ASCII by definition (UI, DA, TM, CS, IS, AS...)."""
        value = self._raw(tag)
        if isinstance(value, bytes):
            return value.decode("ascii", "replace").strip(" \0")
        return "" if value is None else _joined(self.ds, tag)

    def text(self, tag: int) -> str:
        """A value in the data set's character set (PN, LO, SH, ...)."""
        value = self._raw(tag)
        if value is None:
            return ""
        if isinstance(value, bytes) and self.codec:
            try:
                return value.decode(self.codec).strip(" \0")
            except (UnicodeDecodeError, LookupError):
                pass
        return _joined(self.ds, tag)

    def number(self, tag: int) -> int | None:
        elem = self._elements.get(tag)
        if elem is None:
            return None
        if isinstance(elem, RawDataElement) and elem.value is not None:
            # The common encodings straight from the bytes (pydicom's conversion
            # cost more than the rest of the header); anything else falls through.
            vr = elem.VR or _dictionary_vr(tag)
            if vr == "IS":
                text = elem.value.strip(b" \0")
                if not text:
                    return None
                if text.isdigit():
                    return int(text)
            elif vr in _BINARY_INTEGERS:
                unpack = _BINARY_INTEGERS[vr][elem.is_little_endian]
                if len(elem.value) == unpack.size:
                    return unpack.unpack(elem.value)[0]
        try:
            value = self.ds[tag].value
            return int(value) if value not in (None, "") else None
        except (KeyError, TypeError, ValueError):
            return None


# Binary integer VRs of one value: their struct by byte order (little endian: True).
_BINARY_INTEGERS = {
    vr: {little: struct.Struct(("<" if little else ">") + code) for little in (True, False)}
    for vr, code in (("US", "H"), ("UL", "I"), ("SS", "h"), ("SL", "i"))
}


@functools.cache
def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _joined(ds: Dataset, tag: int) -> str:
    value = ds[tag].value
    if value is None or value == "":
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def name_key(name: str) -> str:
    """The form of a person name that matching compares (case-folded)."""
    return name.casefold()


@dataclass(frozen=True)
class Header:
    """What the index keeps of one instance, read from its header."""

    sop_class_uid: str
    transfer_syntax: str
    charset: str
    entry: Entry  # the columns of every level (node/index/ingest_rows.py)

    @property
    def sop_uid(self) -> str:
        return self.entry.sop_uid

    @property
    def series_uid(self) -> str:
        return self.entry.series_uid

    @property
    def study_uid(self) -> str:
        return self.entry.study_uid


# Which catalogue attribute fills each column of each level (the unique keys are the entry's UIDs).
_COLUMNS = {
    level: [c for c in catalog.columns(level) if not c.attribute.unique] for level in catalog.LEVELS
}
_UIDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
# How each stored catalogue attribute is read: (keyword, tag, reader), worked out once.
_META, _NUMBER, _ASCII, _TEXT = range(4)
_PLAN = [
    (
        a.keyword,
        a.source_tag,
        _META
        if a.source_tag >> 16 == 0x0002
        else _NUMBER
        if a.match == catalog.INT
        else _ASCII
        if a.ascii
        else _TEXT,
    )
    for a in catalog.ATTRIBUTES
    if not a.computed
]


def _meta_values(meta: Dataset | None) -> dict[int, str]:
    """The file meta attributes the catalogue stores, by tag."""
    return {
        tag: str(meta.get(tag).value or "").strip(" \0")
        for _, tag, reader in _PLAN
        if reader == _META and meta and tag in meta
    }


def _values(r: _Reader, meta: dict[int, str]) -> dict[str, object]:
    """The value of every stored catalogue attribute, by keyword."""
    values: dict[str, object] = {}
    for keyword, tag, reader in _PLAN:
        if reader == _TEXT:
            values[keyword] = r.text(tag)
        elif reader == _ASCII:
            values[keyword] = r.ascii(tag)
        elif reader == _NUMBER:
            values[keyword] = r.number(tag)
        else:
            values[keyword] = meta.get(tag, "")
    return values


def _row(level: str, values: dict[str, object]) -> dict[str, object]:
    row: dict[str, object] = {}
    for column in _COLUMNS[level]:
        value = values[column.attribute.keyword]
        row[column.name] = name_key(str(value)) if column.folded else value
    return row


# The top-level elements extract() reads (the file meta's come from integrity.Meta).
HEADER_TAGS = frozenset(tag for _, tag, reader in _PLAN if reader != _META) | {_CHARSET}


def extract(ds: Dataset, meta: dict[int, str] | None = None) -> Header:
    """Pick out the indexed attributes; raise Rejected for missing or bad UIDs.

    *meta* holds the file meta's values by tag; by default they are read from ``ds.file_meta``.
    """
    try:
        r = _Reader(ds)
        values = _values(r, meta if meta is not None else _meta_values(getattr(ds, "file_meta", None)))
        charset = r.charset
        entry = Entry(
            patient_id=str(values["PatientID"]),
            study_uid=str(values["StudyInstanceUID"]),
            series_uid=str(values["SeriesInstanceUID"]),
            sop_uid=str(values["SOPInstanceUID"]),
            patient={**_row("PATIENT", values), "charset": charset},
            study={**_row("STUDY", values), "charset": charset},
            series=_row("SERIES", values),
            instance={**_row("IMAGE", values), "charset": charset},
        )
    except Exception as exc:
        raise Rejected(CANNOT_UNDERSTAND, f"data set cannot be parsed: {exc}") from None
    for keyword in _UIDS:
        uid = str(values[keyword])
        if not uid:
            raise Rejected(DATASET_DOES_NOT_MATCH, f"missing {keyword}")
        if not valid_uid(uid):
            raise Rejected(DATASET_DOES_NOT_MATCH, f"{keyword} is not a valid UID: {uid[:80]!r}")
    sop_class = str(values["SOPClassUID"])
    if not sop_class:
        raise Rejected(DATASET_DOES_NOT_MATCH, "missing SOPClassUID")
    transfer_syntax = str(values["AvailableTransferSyntaxUID"])
    if not transfer_syntax:
        raise Rejected(CANNOT_UNDERSTAND, "missing TransferSyntaxUID in the file meta")
    return Header(sop_class, transfer_syntax, charset, entry)


class Ingest:
    """The ingest path of one node: its store, duplicates policy, free-space floor and subscribers."""

    def __init__(
        self,
        store: InstanceStore,
        *,
        duplicates: str = REJECT,
        space: SpaceGuard | None = None,
        transcode_to: str = "",
    ) -> None:
        if duplicates not in DUPLICATE_POLICIES:
            raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, not {duplicates!r}")
        self.store = store
        self.replace = duplicates == REPLACE
        self.space = space
        # [storage].transcode_to: "" stores as received (the default).
        self.transcode_to = transcode_to
        self.index_hooks: list[IndexHook] = []
        self.listeners: list[Listener] = []
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        # Instances between their file's placement and their commit (see _file).
        self._filing = 0
        self._filing_lock = threading.Lock()
        # (time.monotonic(), reason) of the last instance refused because a disk or the index was full.
        self.last_full: tuple[float, str] | None = None

    # -- subscribers -------------------------------------------------------------

    def add_index_hook(self, hook: IndexHook) -> None:
        """Run *hook* inside every indexing transaction (what it writes commits with the instance)."""
        self.index_hooks.append(hook)

    def add_listener(self, listener: Listener) -> None:
        """Tell *listener* of every ingest once it is committed or refused (see :class:`Ingested`).

        It is called in the ingesting thread before the sender is answered, so
        it must be quick (count, set an event, drop a cache entry); what it
        raises is logged and changes nothing.
        """
        self.listeners.append(listener)

    # -- the path ----------------------------------------------------------------

    def ingest_file(self, path: Path, source: Source, *, take: bool) -> Outcome:
        """Store and index the Part-10 file at *path*.

        With *take*, the file is the caller's temporary copy and is moved into
        the store (or deleted on failure); otherwise it is copied and left alone.
        """
        started = time.perf_counter()
        outcome = self._ingest(path, source, take)
        if self.listeners:
            event = Ingested(outcome, source, time.perf_counter() - started)
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:  # a listener never changes what the sender is told
                    log.exception("ingest listener %r failed", listener)
        return outcome

    def _ingest(self, path: Path, source: Source, take: bool) -> Outcome:
        try:
            header = self._read(path)
            relative = self.store.relative_path(header.study_uid, header.series_uid, header.sop_uid)
            refusal = self.space.refusal() if self.space is not None else None
            if refusal:
                raise Rejected(OUT_OF_RESOURCES, refusal)
            if self.transcode_to:
                # Outside the stripe lock: a conversion takes a while and holds no index state.
                path, take, header = self._converted(path, take, header)
        except (Rejected, UnsafePath) as exc:
            if take:
                path.unlink(missing_ok=True)
            code = exc.code if isinstance(exc, Rejected) else DATASET_DOES_NOT_MATCH
            level = logging.WARNING if code == OUT_OF_RESOURCES else logging.INFO
            log.log(level, "refused %s from %s: %s", path.name, source.label, exc)
            return Outcome(Status.FAILED, reason=str(exc), failure_code=code)
        with self._stripes[hash(header.sop_uid) % _STRIPES]:
            return self._file(header, relative, path, source, take)

    def _converted(self, path: Path, take: bool, header: Header) -> tuple[Path, bool, Header]:
        """``[storage].transcode_to``: the file to store instead of *path* (ours to take), or *path* as it is.

        The received file was checked whole first (a deflate bomb or a lying
        length is refused before any decoding); the converted one is read
        and checked again, so what is indexed is what is on disk.
        """
        try:
            converted = convert_for_storage(path, header.transfer_syntax, self.transcode_to, self.store.tmp)
        except OSError as exc:  # the temp folder's disk is full, or the file went away
            code = OUT_OF_RESOURCES if faults.is_full(exc) else PROCESSING_FAILURE
            raise Rejected(
                code, f"could not convert to {self.transcode_to} ([storage].transcode_to): {exc}"
            ) from None
        if converted is None:
            return path, take, header
        try:
            converted_header = self._read(converted)
        except BaseException:
            converted.unlink(missing_ok=True)
            raise
        if take:
            path.unlink(missing_ok=True)
        return converted, True, converted_header

    @staticmethod
    def _read(path: Path) -> Header:
        """Check the file is one whole data set and read its header (one open for both)."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after both readers
        except OSError as exc:
            raise Rejected(PROCESSING_FAILURE, f"cannot read the received file: {exc}") from None
        with f:
            meta = check_whole(f, HEADER_TAGS)
            return extract(header_from(meta), {_TRANSFER_SYNTAX: meta.transfer_syntax})

    def _file(self, header: Header, relative: str, path: Path, source: Source, take: bool) -> Outcome:
        if not self.replace and self.store.exists(relative):
            # The file would replace one held under the same path: judge first, so a
            # refused data set never touches it, not even for the span of a transaction.
            try:
                clash = conflict(lookup(header.entry), header.entry)
            except Exception as exc:
                return self._fault(header, exc, path if take else None)
            if clash is not None:
                if take:
                    path.unlink(missing_ok=True)
                return self._conflict(header, clash, source)
        try:
            placement = self.store.place(path, relative, take=take, defer=True)
        except Exception as exc:
            return self._fault(header, exc, None)
        hooks = self.index_hooks

        def inside(instance: Instance) -> None:
            for hook in hooks:
                hook(instance, source)
            # The fsyncs ran while the rows were written; the commit waits for
            # them, so a committed row always names a file that is on disk.
            placement.durable()

        now = utcnow()
        file = {
            "path": relative,
            "size": placement.size,
            "received_at": now,
            "calling_aet": source.calling_aet,
            "source": source.label,
        }
        with self._filing_lock:
            self._filing += 1
            alone = self._filing == 1
        try:
            if not alone:
                # Others are filing too: wait for the fsyncs here rather than while
                # holding the index's write lock, which they queue for.
                placement.durable()
            filed = file_instance(header.entry, file, replace=self.replace, inside=inside, now=now)
        except Exception as exc:
            self._undo(placement)
            if isinstance(exc, Conflict):
                return self._conflict(header, exc, source)
            return self._fault(header, exc, None)
        finally:
            with self._filing_lock:
                self._filing -= 1
        self.store.settle(placement)
        if filed.old_path and filed.old_path != relative:
            self.store.remove(filed.old_path)  # "replace" moved it: the old file goes
        if self.space is not None:
            self.space.admitted(placement.size)
        moved = filed.moved_from
        if moved is not None:
            log.warning(
                "replaced %s from %s: moved from study %s (patient ID %r) to study %s (patient ID %r)",
                header.sop_uid,
                source.label,
                moved.study_uid,
                moved.patient_id,
                header.study_uid,
                header.entry.patient_id,
            )
        # Without a lookup the index does not say whether the instance was held: its file does.
        replaced = filed.replaced if filed.replaced is not None else placement.backup is not None
        return Outcome(
            Status.REPLACED if replaced else Status.STORED,
            **self._uids(header),
            instance_id=filed.instance.id,
            size=placement.size,
            moved_from_study=moved.study_uid if moved else "",
            moved_from_series=(moved.series_uid or "") if moved else "",
        )

    def _undo(self, placement) -> None:
        """Take the file back after a failed indexing; never raise (the failure is answered anyway)."""
        try:
            self.store.undo(placement)
        except OSError:
            log.exception("could not take back %s after a failed indexing", placement.relative)

    @staticmethod
    def _uids(header: Header) -> dict[str, str]:
        return {
            "sop_class_uid": header.sop_class_uid,
            "sop_instance_uid": header.sop_uid,
            "study_uid": header.study_uid,
            "series_uid": header.series_uid,
        }

    def _conflict(self, header: Header, clash: Conflict, source: Source) -> Outcome:
        """Refused: filed elsewhere.  0xA900: a Storage failure every SCU knows (DCMTK reports
        0x0111 "duplicate SOP instance", an N-service status, as unknown) and does not retry;
        the ErrorComment says where the instance is held."""
        log.warning(
            "refused %s from %s: %s ([storage].duplicates = \"reject\")", header.sop_uid, source.label, clash
        )
        return Outcome(
            Status.FAILED,
            **self._uids(header),
            reason=f"{clash.reason}; refused, nothing changed ([storage].duplicates = \"reject\")",
            comment=clash.comment,
            failure_code=DATASET_DOES_NOT_MATCH,
            logged=True,
        )

    def _fault(self, header: Header, exc: Exception, leftover: Path | None) -> Outcome:
        """A failure to write or index: out of resources when full, a processing failure otherwise."""
        if leftover is not None:
            leftover.unlink(missing_ok=True)
        cause = faults.describe(exc)
        if faults.is_full(exc):
            where = "index" if _from_index(exc) else "storage"
            reason, code = f"{where} full: {cause}", OUT_OF_RESOURCES
            self.last_full = (time.monotonic(), reason)
            log.warning("refused %s: %s", header.sop_uid, reason)
        else:
            reason, code = f"could not store the instance: {cause}", PROCESSING_FAILURE
            log.error("storing %s failed: %s", header.sop_uid, cause, exc_info=exc)
        return Outcome(Status.FAILED, **self._uids(header), reason=reason, failure_code=code)


def _from_index(exc: BaseException) -> bool:
    """True when the failure came from the database rather than the file system."""
    return not isinstance(faults.root_cause(exc), OSError)
