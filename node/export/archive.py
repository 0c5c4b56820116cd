"""Archives of an accession's studies in ``[export].path``: naming, building, freshness, eviction.

An archive is ``{stem}.zip`` (``stem`` = :func:`accession.file_stem`) with
entries ``{stem}/{series folder}/{instance}.dcm``; every name below the
accession comes from the index (series number, modality, instance number,
SOP Instance UID), never from the request.  It is written to a temp file in
``{export}/.tmp``, fsynced and renamed into place, so a reader sees the whole
archive or none.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import peewee

from ..index.models import Instance, Series, Study
from ..jobs.identity import is_gone
from ..store import InstanceStore
from ..zipstream import Entry, iter_zip
from .accession import file_stem, inside

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
SUFFIX = ".zip"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Version:
    """What an archive is a snapshot of: the accession's studies and their last change."""

    studies: int
    updated_at: dt.datetime | None

    @property
    def held(self) -> bool:
        return self.studies > 0


def local_version(accession: str) -> Version:
    """How many local studies carry *accession*, and when the newest of them last changed."""
    row = (
        Study.select(peewee.fn.COUNT(Study.id).alias("n"), peewee.fn.MAX(Study.updated_at).alias("at"))
        .where(Study.accession_number == accession)
        .dicts()
        .get()
    )
    at = row["at"]
    if isinstance(at, str):  # SQLite aggregate results come back as text
        at = dt.datetime.fromisoformat(at)
    return Version(row["n"] or 0, at)


def count_instances(study_uids: list[str]) -> int:
    """How many instances of these studies the index holds."""
    if not study_uids:
        return 0
    return Instance.select().join(Series).join(Study).where(Study.study_uid.in_(study_uids)).count()


def _safe(text: str, fallback: str) -> str:
    cleaned = _NAME_UNSAFE.sub("_", text.strip()).strip("._")
    return cleaned or fallback


class Namer:
    """Entry names for one archive: ``{stem}/{NNNN-MODALITY}/{NNNNN-SOPUID}.dcm``.

    A series folder is its number and modality; two series that would share
    a folder get ``-2``, ``-3``... in the order they are first seen.
    """

    def __init__(self, accession: str) -> None:
        self.stem = file_stem(accession)
        self._folders: dict[int, str] = {}
        self._used: set[str] = set()

    def name(self, series_id: int, series_number, modality: str, instance_number, sop_uid: str) -> str:
        folder = self._folders.get(series_id)
        if folder is None:
            base = f"{series_number or 0:04d}-{_safe(modality, 'OT')}"
            folder, n = base, 1
            while folder in self._used:
                n += 1
                folder = f"{base}-{n}"
            self._used.add(folder)
            self._folders[series_id] = folder
        return f"{self.stem}/{folder}/{instance_number or 0:05d}-{_safe(sop_uid, 'instance')}.dcm"


# What naming and reading an instance needs, as plain tuples (a study may
# have many thousands of instances: no model objects are kept per instance).
_COLUMNS = (
    Instance.id,
    Series.id,
    Series.series_number,
    Series.modality,
    Instance.instance_number,
    Instance.sop_uid,
    Instance.path,
    Instance.size,
)


def _entry(namer: Namer, store: InstanceStore, row: tuple) -> Entry:
    _, series_id, series_number, modality, instance_number, sop_uid, path, size = row
    name = namer.name(series_id, series_number, modality, instance_number, sop_uid)
    return Entry(name, store.absolute(path), size)


def entries(store: InstanceStore, accession: str) -> list[Entry]:
    """The archive entries of every local instance of *accession*, in series / instance order."""
    namer = Namer(accession)
    rows = list(
        Instance.select(*_COLUMNS)
        .join(Series)
        .join(Study)
        .where(Study.accession_number == accession)
        .order_by(Series.series_number, Series.series_uid, Instance.instance_number, Instance.sop_uid)
        .tuples()
    )
    store.note_reads(row[6] for row in rows)  # the bounded store's least-recently-used order
    return [_entry(namer, store, row) for row in rows]


def arrivals(
    store: InstanceStore,
    accession: str,
    study_uids: list[str],
    finished: threading.Event,
    *,
    poll_s: float = 0.05,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Entry]:
    """Entries of the studies' instances as they are indexed, until *finished* is set and all are seen.

    Lets an archive be written while a retrieval is still running.  Each
    instance is yielded once (a re-sent instance is not added twice).
    """
    namer = Namer(accession)
    seen: set[str] = set()
    last_id = 0
    while True:
        done = finished.is_set()  # read before the query: nothing indexed before it is missed
        rows = list(
            Instance.select(*_COLUMNS)
            .join(Series)
            .join(Study)
            .where(Study.study_uid.in_(study_uids) & (Instance.id > last_id))
            .order_by(Instance.id)
            .tuples()
        )
        for row in rows:
            last_id = row[0]
            if row[5] not in seen:
                seen.add(row[5])
                yield _entry(namer, store, row)
        if done:
            return
        if should_stop and should_stop():
            raise InterruptedError("node stopping")
        if not rows:
            finished.wait(poll_s)


def archive_path(export_dir: Path, accession: str) -> Path:
    """Where the archive of *accession* lives (checked to be directly inside *export_dir*)."""
    return inside(export_dir, file_stem(accession) + SUFFIX)


def write_temp(
    items: Iterable[Entry],
    export_dir: Path,
    level: int,
    *,
    on_bytes: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    fsync: bool = True,
) -> tuple[Path, int, int]:
    """Write the archive of *items* (may be lazy) to a temp file; return (temp path, size, entries).

    Raises ``InterruptedError`` when *should_stop* turns true; the temp file is
    removed on any failure.
    """
    tmp_dir = export_dir / TMP_DIR
    tmp_dir.mkdir(parents=True, exist_ok=True)
    # Named for the process writing it, so that another node sharing the
    # folder can tell a live build's file from one a dead process left.
    temp = tmp_dir / f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}.part"
    written = 0
    count = 0
    last_report = 0.0

    def counted() -> Iterator[Entry]:
        nonlocal count
        for item in items:
            count += 1
            yield item

    try:
        with temp.open("wb") as fh:
            for piece in iter_zip(counted(), level):
                fh.write(piece)
                written += len(piece)
                if should_stop and should_stop():
                    raise InterruptedError("node stopping")
                now = time.monotonic()
                if on_bytes and now - last_report >= 0.5:
                    last_report = now
                    on_bytes(written)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, written, count


def publish(temp: Path, export_dir: Path, accession: str, *, fsync: bool = True) -> Path:
    """Rename a finished temp archive into place as the archive of *accession*."""
    final = archive_path(export_dir, accession)
    try:
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if fsync:
        fd = os.open(export_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return final


def build(
    store: InstanceStore,
    export_dir: Path,
    accession: str,
    level: int,
    *,
    on_bytes: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    fsync: bool = True,
) -> tuple[Path, int, int]:
    """Write the archive of *accession*'s local instances; return (path, size, entry count)."""
    temp, size, count = write_temp(
        entries(store, accession), export_dir, level, on_bytes=on_bytes, should_stop=should_stop, fsync=fsync
    )
    return publish(temp, export_dir, accession, fsync=fsync), size, count


def discard_temp(export_dir: Path) -> None:
    """Remove temp archives left by interrupted builds: those of dead processes of this host.

    Temp archives of live processes (other nodes on the same folder) stay;
    those of other hosts go once they are a day old.
    """
    tmp_dir = export_dir / TMP_DIR
    if not tmp_dir.is_dir():
        return
    now = time.time()
    host = socket.gethostname()
    for entry in tmp_dir.iterdir():
        name = entry.name  # host:pid:random.part (an older node wrote random.part)
        try:
            elsewhere = not name.startswith(f"{host}:")
            stale = ":" not in name or is_gone(name) or (elsewhere and now - entry.stat().st_mtime > 86400)
            if stale:
                entry.unlink(missing_ok=True)
        except OSError:
            pass


def evict(export_dir: Path, max_total_bytes: int, max_age_days: float, keep: set[Path]) -> list[Path]:
    """Delete archives older than *max_age_days*, then the oldest until the total fits.

    Archives in *keep* (e.g. the one just built) stay.  Returns the deleted paths.
    """
    now = time.time()
    found = []
    for path in export_dir.glob(f"*{SUFFIX}"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        found.append((st.st_mtime, st.st_size, path))
    found.sort()
    total = sum(size for _, size, _ in found)
    removed = []
    for mtime, size, path in found:
        if path in keep:
            continue
        if now - mtime > max_age_days * 86400 or total > max_total_bytes:
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
    return removed
