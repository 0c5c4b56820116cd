"""Instance files: where they live, how they are written, how they are read.

Files are ``{root}/{study}/{series}/{sop}.dcm`` with every part a validated
UID, so no input ever chooses a path.  A file is written under
``{root}/.tmp``, fsynced and renamed into place, and its folder fsynced, so a
crash leaves the whole instance or nothing indexed.  This module is the one way to
read an instance back.

The ingest path has the two fsyncs run in the background
(``place(..., defer=True)``) while it writes the index rows, and waits for
them before the index commits (see :mod:`node.ingest`): a committed row
always names a file on disk.  After the rename they cost about one journal
commit on ext4, and ext4 joins those of several associations in flight at
once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .uids import valid_uid

TMP_DIR = ".tmp"
SUFFIX = ".dcm"
LOCK_FILE = ".in-use"
# Threads that run background fsyncs: a few, as one is in flight per association at a time.
SYNC_THREADS = 8


class UnsafePath(ValueError):
    """A name built from input would leave the store or is not a UID."""


@dataclass(frozen=True)
class Placement:
    """An instance file put in place by :meth:`InstanceStore.place`, not yet settled."""

    relative: str
    final: Path
    backup: Path | None  # the file it replaced, kept until settled
    size: int
    # The fsyncs still running (``place(..., defer=True)``): see :meth:`durable`.
    pending: tuple[Future, ...] = ()

    def durable(self) -> None:
        """Wait until the file and its folder entry are on disk (raises what an fsync raised)."""
        for future in self.pending:
            future.result()


class InstanceStore:
    """The folder of instance files under ``[storage].path``."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        self.tmp = self.root / TMP_DIR
        self.fsync = fsync
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        self._syncer: ThreadPoolExecutor | None = None
        self._syncer_lock = threading.Lock()
        # Told of the instances a client retrieves (last-access tracking, node/cache/access.py).
        self.read_listener: Callable[[Iterable[str]], None] | None = None

    # -- names ---------------------------------------------------------------

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """The store-relative path of an instance; raises UnsafePath for a bad UID."""
        for uid in (study_uid, series_uid, sop_uid):
            if not valid_uid(uid):
                raise UnsafePath(f"not a valid UID: {uid!r}")
        return f"{study_uid}/{series_uid}/{sop_uid}{SUFFIX}"

    def absolute(self, relative: str) -> Path:
        """The absolute path of a store-relative path, refusing anything outside the store.

        Judged on the text (no ``..``, not absolute): the store's own paths are
        built from validated UIDs, and resolving symlinks cost a system call
        per path component on every instance stored or read.
        """
        norm = os.path.normpath(relative)
        if os.path.isabs(norm) or norm in (".", "..") or norm.startswith("../") or "\0" in norm:
            raise UnsafePath(f"path outside the store: {relative!r}")
        return self.root / norm

    # -- writing -------------------------------------------------------------

    def temp_path(self) -> Path:
        """A fresh name in the store's temp folder (same file system as the store)."""
        return self.tmp / f"{uuid.uuid4().hex}.part"

    def _background(self) -> ThreadPoolExecutor:
        with self._syncer_lock:
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="fsync")
            return self._syncer

    def place(self, temp: Path, relative: str, *, take: bool = True, defer: bool = False) -> Placement:
        """Make *temp* durable and move (or copy, if not *take*) it to *relative*.

        A file already at *relative* is replaced atomically, but kept (hard
        linked under the temp folder) until :meth:`settle`: :meth:`undo` puts
        it back, so a replacement whose indexing fails loses nothing.  On
        error nothing is left behind (and *temp* is gone if it was taken).

        With *defer* the fsyncs run in the background and the caller must
        call :meth:`Placement.durable` before it counts the file as stored
        (the ingest path does so inside its index transaction, before the
        commit).  A new file is then renamed first and fsynced with its
        folder after, so that one journal commit covers both (on ext4 the
        file's fsync commits the rename too); until the commit a crash may
        leave it incomplete at its place, but no row names it (``dicom-node
        check`` lists it as a file without row).  A file that replaces one is still fsynced
        before the rename: the row naming the old one may be committed.
        """
        final = self.absolute(relative)
        if not take:
            copy = self.temp_path()
            try:
                shutil.copyfile(temp, copy)
            except BaseException:
                _unlink_quietly(copy)
                raise
            temp = copy
        backup: Path | None = None
        moved = False
        pending: list[Future] = []
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            replacing = final.exists()
            early = self.fsync and defer and not replacing
            if self.fsync and not early:
                _fsync_file(temp)
            if replacing:
                backup = self.tmp / f"{uuid.uuid4().hex}.old"
                os.link(final, backup)
            try:
                os.replace(temp, final)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # Another file system (e.g. a temp dir elsewhere): copy, then rename.
                staged = self.temp_path()
                try:
                    shutil.copyfile(temp, staged)
                    if self.fsync:
                        _fsync_file(staged)
                    os.replace(staged, final)
                except BaseException:
                    _unlink_quietly(staged)
                    raise
                os.unlink(temp)
            moved = True
            if self.fsync and defer:
                # One task: after the rename, the file's fsync commits the journal
                # with its folder entry in it, so the folder's costs little more.
                task = _fsync_new if early else _fsync_dir
                pending.append(self._background().submit(task, final if early else final.parent))
            elif self.fsync:
                _fsync_dir(final.parent)
            size = final.stat().st_size
        except BaseException:
            for future in pending:
                future.exception()  # finished before the file goes
            _unlink_quietly(temp)
            if backup is not None:
                os.replace(backup, final)
            elif moved:
                _unlink_quietly(final)
            raise
        return Placement(relative, final, backup, size, tuple(pending))

    def undo(self, placement: Placement) -> None:
        """Take back a :meth:`place`: the replaced file returns, or the new one goes."""
        for future in placement.pending:
            future.exception()  # let it finish first; its failure changes nothing here
        if placement.backup is not None:
            os.replace(placement.backup, placement.final)
            if self.fsync:
                _fsync_dir(placement.final.parent)
        else:
            self.remove(placement.relative)

    def settle(self, placement: Placement) -> None:
        """The placement stands: drop the replaced file kept for :meth:`undo`."""
        if placement.backup is not None:
            _unlink_quietly(placement.backup)

    def commit(self, temp: Path, relative: str, *, take: bool = True) -> int:
        """:meth:`place` and :meth:`settle` at once; returns the size in bytes."""
        placement = self.place(temp, relative, take=take)
        self.settle(placement)
        return placement.size

    def exists(self, relative: str) -> bool:
        """True when an instance file is at *relative*."""
        return self.absolute(relative).exists()

    def remove(self, relative: str) -> None:
        """Delete an instance file if present, and its folders once empty."""
        path = self.absolute(relative)
        _unlink_quietly(path)
        for folder in (path.parent, path.parent.parent):
            try:
                folder.rmdir()
            except OSError:
                break

    def discard_temp(self, max_age_s: float = 0.0) -> int:
        """Remove temp files left by an interrupted write; return how many."""
        removed = 0
        for entry, age in self.temp_files():
            if age >= max_age_s:
                try:
                    entry.unlink()
                    removed += 1
                except OSError:
                    pass
        return removed

    def temp_files(self) -> list[tuple[Path, float]]:
        """Every file in the temp folder with its age in seconds (since its last change)."""
        now = time.time()
        found = []
        for entry in self.tmp.iterdir():
            try:
                found.append((entry, now - entry.stat().st_mtime))
            except OSError:
                pass  # gone meanwhile
        return found

    # -- who is using the store ----------------------------------------------

    def hold(self) -> None:
        """Mark the store as in use by this process until it exits (a shared lock).

        ``dicom-node check`` looks for it: temp files of a store in use may be
        transfers in progress rather than debris.  A store whose disk is full
        cannot get its lock file: the node still starts (and says why it
        refuses data), ``check`` then counts every temp file as debris.
        """
        if self._lock_fd is None:
            try:
                fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                return
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._lock_fd = fd

    def in_use(self) -> bool:
        """True when another process holds the store (:meth:`hold`)."""
        if self._lock_fd is not None:
            return True
        try:
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the lock taken here
        return False

    # -- reading -------------------------------------------------------------

    def note_reads(self, relatives: Iterable[str]) -> None:
        """Say that a client is retrieving the instances at *relatives* (WADO-RS, C-MOVE, C-GET, ZIP).

        Called once per request by the doors' lookups, not per file opened:
        a viewer reading frames one by one must not cost a write each.
        """
        if self.read_listener is not None:
            self.read_listener(relatives)

    def open(self, relative: str) -> BinaryIO:
        """Open an instance file for reading (Part-10 bytes as received)."""
        return self.absolute(relative).open("rb")

    def iter_files(self) -> Iterator[tuple[str, int]]:
        """Every instance file as (relative path, size), temp files excluded."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
            for name in filenames:
                if name.endswith(SUFFIX):
                    path = Path(dirpath) / name
                    yield path.relative_to(self.root).as_posix(), path.stat().st_size


def study_of(relative: str) -> str:
    """The Study Instance UID a store-relative path is filed under (its first part)."""
    return relative.partition("/")[0]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_new(path: Path) -> None:
    """fsync a file just renamed into place, then its folder."""
    _fsync_file(path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def use_store_tempdir(store: InstanceStore) -> None:
    """Make the process's temp files land in the store's temp folder.

    pynetdicom spools a received C-STORE data set to a NamedTemporaryFile in
    the default temp dir; on the store's file system the ingest path can
    rename it into place instead of copying it.
    """
    tempfile.tempdir = str(store.tmp)
