"""Instance files: where they live, how they are written, how they are read.

Files are ``{root}/{study}/{series}/{sop}.dcm`` with every part a validated
UID, so no input ever chooses a path.  A file is written under
``{root}/.tmp``, fsynced and renamed into place, and its folder fsynced, so a
crash leaves the whole instance or nothing.  This module is the one way to
read an instance back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .uids import valid_uid

TMP_DIR = ".tmp"
SUFFIX = ".dcm"


class UnsafePath(ValueError):
    """A name built from input would leave the store or is not a UID."""


class InstanceStore:
    """The folder of instance files under ``[storage].path``."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        self.tmp = self.root / TMP_DIR
        self.fsync = fsync
        self.tmp.mkdir(parents=True, exist_ok=True)

    # -- names ---------------------------------------------------------------

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """The store-relative path of an instance; raises UnsafePath for a bad UID."""
        for uid in (study_uid, series_uid, sop_uid):
            if not valid_uid(uid):
                raise UnsafePath(f"not a valid UID: {uid!r}")
        return f"{study_uid}/{series_uid}/{sop_uid}{SUFFIX}"

    def absolute(self, relative: str) -> Path:
        """The absolute path of a store-relative path, refusing anything outside the store."""
        path = (self.root / relative).resolve()
        if self.root not in path.parents:
            raise UnsafePath(f"path outside the store: {relative!r}")
        return path

    # -- writing -------------------------------------------------------------

    def temp_path(self) -> Path:
        """A fresh name in the store's temp folder (same file system as the store)."""
        return self.tmp / f"{uuid.uuid4().hex}.part"

    def commit(self, temp: Path, relative: str, *, take: bool = True) -> int:
        """Make *temp* durable and move (or copy, if not *take*) it to *relative*.

        Returns the size in bytes.  An existing file at *relative* is replaced
        atomically.
        """
        final = self.absolute(relative)
        final.parent.mkdir(parents=True, exist_ok=True)
        if not take:
            copy = self.temp_path()
            shutil.copyfile(temp, copy)
            temp = copy
        try:
            if self.fsync:
                _fsync_file(temp)
            try:
                os.replace(temp, final)
            except OSError:
                # Another file system (e.g. a temp dir elsewhere): copy, then rename.
                staged = self.temp_path()
                shutil.copyfile(temp, staged)
                if self.fsync:
                    _fsync_file(staged)
                os.replace(staged, final)
                os.unlink(temp)
        except BaseException:
            _unlink_quietly(temp)
            raise
        if self.fsync:
            _fsync_dir(final.parent)
        return final.stat().st_size

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
        import time

        removed = 0
        now = time.time()
        for entry in self.tmp.iterdir():
            try:
                if now - entry.stat().st_mtime >= max_age_s:
                    entry.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    # -- reading -------------------------------------------------------------

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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
