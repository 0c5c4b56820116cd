"""The one ingest path: every door (C-STORE, STOW-RS, import, retrieval) ends here.

``ingest_file`` takes a Part-10 file, reads its header (never the pixel
data), checks it, makes the file durable in the store, indexes it and
returns an :class:`Outcome` from which a DICOM status and a DICOMweb
FailureReason can both be derived.  Success is returned only after the
file is fsynced in place and the index row committed.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .index.db import execute, write_transaction
from .index.models import Instance, utcnow
from .statuses import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH, OUT_OF_RESOURCES, PROCESSING_FAILURE
from .store import InstanceStore, UnsafePath
from .uids import valid_uid

log = logging.getLogger(__name__)



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

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED


class Rejected(Exception):
    """The data set cannot be stored; carries the failure code and a message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# Called inside the indexing transaction for every stored instance, so that
# what they write (e.g. a forwarding outbox row) commits with the instance.
IndexHook = Callable[[Instance, Source], None]
index_hooks: list[IndexHook] = []

# Defer values this large: we only read the header (never pixel data).
_DEFER = 16 * 1024


def read_header(path: Path) -> Dataset:
    """Parse a Part-10 file up to its pixel data; raise Rejected if it is not DICOM."""
    try:
        ds = dcmread(path, stop_before_pixels=True, defer_size=_DEFER)
    except InvalidDicomError:
        raise Rejected(
            CANNOT_UNDERSTAND, "not a DICOM Part-10 file (no 'DICM' prefix or file meta)"
        ) from None
    except Exception as exc:  # pydicom raises many types on garbage input
        raise Rejected(CANNOT_UNDERSTAND, f"data set cannot be parsed: {exc}") from None
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
        raw = ds.get_item(0x00080005)
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
        elem = self.ds.get_item(tag)
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
        try:
            value = self.ds[tag].value
            return int(value) if value not in (None, "") else None
        except (KeyError, TypeError, ValueError):
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
    sop_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    charset: str
    patient: dict[str, str]
    study: dict[str, str]
    series: dict[str, object]
    instance: dict[str, object]


def extract(ds: Dataset) -> Header:
    """Pick out the indexed attributes; raise Rejected for missing or bad UIDs."""
    try:
        r = _Reader(ds)
        uids = {
            "SOPInstanceUID": r.ascii(0x00080018),
            "SeriesInstanceUID": r.ascii(0x0020000E),
            "StudyInstanceUID": r.ascii(0x0020000D),
        }
        sop_class = r.ascii(0x00080016)
        meta = getattr(ds, "file_meta", None)
        transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
        charset = r.charset
        patient_name = r.text(0x00100010)
        referring = r.text(0x00080090)
        header = Header(
            sop_class_uid=sop_class,
            sop_uid=uids["SOPInstanceUID"],
            series_uid=uids["SeriesInstanceUID"],
            study_uid=uids["StudyInstanceUID"],
            transfer_syntax=transfer_syntax,
            charset=charset,
            patient={
                "patient_id": r.text(0x00100020),
                "patient_name": patient_name,
                "patient_name_key": name_key(patient_name),
                "birth_date": r.ascii(0x00100030),
                "sex": r.ascii(0x00100040),
                "issuer_of_patient_id": r.text(0x00100021),
                "charset": charset,
            },
            study={
                "study_date": r.ascii(0x00080020),
                "study_time": r.ascii(0x00080030),
                "accession_number": r.text(0x00080050),
                "study_id": r.text(0x00200010),
                "study_description": r.text(0x00081030),
                "referring_physician": referring,
                "referring_physician_key": name_key(referring),
                "institution_name": r.text(0x00080080),
                "charset": charset,
            },
            series={
                "modality": r.ascii(0x00080060),
                "series_number": r.number(0x00200011),
                "series_description": r.text(0x0008103E),
                "series_date": r.ascii(0x00080021),
                "series_time": r.ascii(0x00080031),
                "body_part_examined": r.ascii(0x00180015),
                "protocol_name": r.text(0x00181030),
            },
            instance={
                "sop_class_uid": sop_class,
                "instance_number": r.number(0x00200013),
                "transfer_syntax": transfer_syntax,
                "rows": r.number(0x00280010),
                "columns": r.number(0x00280011),
                "number_of_frames": r.number(0x00280008),
                "content_date": r.ascii(0x00080023),
                "content_time": r.ascii(0x00080033),
                "charset": charset,
            },
        )
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected(CANNOT_UNDERSTAND, f"data set cannot be parsed: {exc}") from None
    for keyword, uid in uids.items():
        if not uid:
            raise Rejected(DATASET_DOES_NOT_MATCH, f"missing {keyword}")
        if not valid_uid(uid):
            raise Rejected(DATASET_DOES_NOT_MATCH, f"{keyword} is not a valid UID: {uid[:80]!r}")
    if not sop_class:
        raise Rejected(DATASET_DOES_NOT_MATCH, "missing SOPClassUID")
    if not transfer_syntax:
        raise Rejected(CANNOT_UNDERSTAND, "missing TransferSyntaxUID in the file meta")
    return header


def _out_of_resources(exc: BaseException | None) -> str:
    """The message of the disk-full error behind *exc* (OSError, or SQLite's "database or disk is full")."""
    while exc is not None:
        if isinstance(exc, OSError) or "database or disk is full" in str(exc):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return ""


def ingest_file(store: InstanceStore, path: Path, source: Source, *, take: bool) -> Outcome:
    """Store and index the Part-10 file at *path*.

    With *take*, the file is the caller's temporary copy and is moved into
    the store (or deleted on failure); otherwise it is copied and left alone.
    """
    try:
        header = extract(read_header(path))
        relative = store.relative_path(header.study_uid, header.series_uid, header.sop_uid)
    except (Rejected, UnsafePath) as exc:
        if take:
            path.unlink(missing_ok=True)
        code = exc.code if isinstance(exc, Rejected) else DATASET_DOES_NOT_MATCH
        log.debug("rejected %s: %s", path, exc)
        return Outcome(Status.FAILED, reason=str(exc), failure_code=code)
    try:
        size = store.commit(path, relative, take=take)
        instance, replaced_path, replaced = _index(header, relative, size, source)
    except Exception as exc:
        full = _out_of_resources(exc)
        if not full:  # a full disk is the caller's one log line, not a traceback
            log.exception("storing %s failed", header.sop_uid)
        return Outcome(
            Status.FAILED,
            sop_class_uid=header.sop_class_uid,
            sop_instance_uid=header.sop_uid,
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            reason=f"could not store the instance: {full or exc}",
            failure_code=OUT_OF_RESOURCES if full else PROCESSING_FAILURE,
        )
    if replaced_path and replaced_path != relative:
        store.remove(replaced_path)
    return Outcome(
        Status.REPLACED if replaced else Status.STORED,
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_uid,
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        instance_id=instance.id,
        size=size,
    )


def _q(name: str) -> str:
    return f'"{name}"'


def _upsert_sql(table: str, key: str, columns: list[str], *, parent: str | None = None) -> str:
    """INSERT ... ON CONFLICT (key) DO UPDATE ... RETURNING id, for one level.

    Portable to SQLite >= 3.35 and PostgreSQL.  Empty incoming values never
    overwrite stored ones (an instance without StudyDescription leaves the
    study's alone); ``updated_at`` always moves, which is what invalidates
    caches built from the study.
    """
    cols = [key, *([parent] if parent else []), *columns, "created_at", "updated_at"]
    sets = [
        f"{_q(c)} = COALESCE(excluded.{_q(c)}, {_q(table)}.{_q(c)})"
        if c == "series_number"
        else f"{_q(c)} = CASE WHEN excluded.{_q(c)} = '' THEN {_q(table)}.{_q(c)} ELSE excluded.{_q(c)} END"
        for c in columns
    ]
    if parent:
        sets.append(f"{_q(parent)} = excluded.{_q(parent)}")
    sets.append('"updated_at" = excluded."updated_at"')
    return (
        f"INSERT INTO {_q(table)} ({', '.join(map(_q, cols))}) VALUES ({', '.join('?' * len(cols))}) "
        f'ON CONFLICT ({_q(key)}) DO UPDATE SET {", ".join(sets)} RETURNING "id"'
    )


_PATIENT_COLS = ["patient_name", "patient_name_key", "birth_date", "sex", "issuer_of_patient_id", "charset"]
_STUDY_COLS = [
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician",
    "referring_physician_key",
    "institution_name",
    "charset",
]
_SERIES_COLS = [
    "modality",
    "series_number",
    "series_description",
    "series_date",
    "series_time",
    "body_part_examined",
    "protocol_name",
]
_INSTANCE_COLS = [
    "sop_class_uid",
    "instance_number",
    "transfer_syntax",
    "rows",
    "columns",
    "number_of_frames",
    "content_date",
    "content_time",
    "charset",
    "path",
    "size",
    "received_at",
    "calling_aet",
    "source",
]
_SQL_PATIENT = _upsert_sql("patient", "patient_id", _PATIENT_COLS)
_SQL_STUDY = _upsert_sql("study", "study_uid", _STUDY_COLS, parent="patient_id")
_SQL_SERIES = _upsert_sql("series", "series_uid", _SERIES_COLS, parent="study_id")
_SQL_OLD_INSTANCE = 'SELECT "id", "path" FROM "instance" WHERE "sop_uid" = ?'
_SQL_INSERT_INSTANCE = (
    f'INSERT INTO "instance" ("sop_uid", "series_id", {", ".join(map(_q, _INSTANCE_COLS))}) '
    f"VALUES ({', '.join('?' * (len(_INSTANCE_COLS) + 2))}) RETURNING \"id\""
)
_SQL_UPDATE_INSTANCE = (
    f'UPDATE "instance" SET "series_id" = ?, {", ".join(f"{_q(c)} = ?" for c in _INSTANCE_COLS)} '
    'WHERE "id" = ?'
)


def _index(header: Header, relative: str, size: int, source: Source) -> tuple[Instance, str | None, bool]:
    """Upsert the four levels in one transaction; returns (row, old path, replaced).

    Hand-written statements: this runs once per received instance, and
    building the equivalent peewee queries cost several times the SQL itself.
    """
    now = utcnow()
    h = header
    inst = dict(
        h.instance,
        path=relative,
        size=size,
        received_at=now,
        calling_aet=source.calling_aet,
        source=source.label,
    )
    with write_transaction():
        (patient_id,) = execute(
            _SQL_PATIENT, [h.patient["patient_id"], *(h.patient[c] for c in _PATIENT_COLS), now, now]
        ).fetchone()
        (study_id,) = execute(
            _SQL_STUDY, [h.study_uid, patient_id, *(h.study[c] for c in _STUDY_COLS), now, now]
        ).fetchone()
        (series_id,) = execute(
            _SQL_SERIES, [h.series_uid, study_id, *(h.series[c] for c in _SERIES_COLS), now, now]
        ).fetchone()
        old = execute(_SQL_OLD_INSTANCE, [h.sop_uid]).fetchone()
        values = [inst[c] for c in _INSTANCE_COLS]
        if old is None:
            (instance_id,) = execute(_SQL_INSERT_INSTANCE, [h.sop_uid, series_id, *values]).fetchone()
            old_path = None
        else:
            instance_id, old_path = old
            execute(_SQL_UPDATE_INSTANCE, [series_id, *values, instance_id])
        instance = Instance(id=instance_id, sop_uid=h.sop_uid, series=series_id, **inst)
        for hook in index_hooks:
            hook(instance, source)
    return instance, old_path, old is not None
