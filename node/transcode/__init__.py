"""Transcoding: stored instances in another transfer syntax, only where a peer needs it.

Every door that sends calls one function here:

- :func:`transcode` yields the converted Part-10 bytes of a stored instance
  (WADO-RS streams them);
- :func:`transcode_to_temp` writes them to a temp file in the store's temp
  folder (DIMSE senders hand that path to pynetdicom / the direct writer,
  then delete it);
- :func:`convert_for_storage` converts a received Part-10 temp file for the
  ingest path (``[storage].transcode_to``), or says to store it as received;
- :func:`convert_frame` converts one frame (WADO-RS frames);
- :mod:`.negotiate` says whether to send as stored, transcode, or give up.

Conversions stream frame by frame (memory bounded by a frame, not the
instance); a failure raises :class:`TranscodeError` naming the instance and
the reason.  Lossy targets are produced only when a door asks for exactly
one (see :mod:`.negotiate`).
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..store import InstanceStore
from . import syntaxes
from .codec import CodecError, PixelFormat, decode, encode
from .convert import Conversion, FrameConverter, TranscodeError
from .negotiate import Action, Plan, acceptor_syntax, plan, receiving_syntax, requestor_syntaxes

__all__ = [
    "Action",
    "CodecError",
    "Conversion",
    "FrameConverter",
    "PixelFormat",
    "Plan",
    "TranscodeError",
    "acceptor_syntax",
    "convert_for_storage",
    "convert_frame",
    "open_conversion",
    "plan",
    "receiving_syntax",
    "requestor_syntaxes",
    "syntaxes",
    "transcode",
    "transcode_file",
    "transcode_to_temp",
]

log = logging.getLogger(__name__)


def open_conversion(store: InstanceStore, relative: str, stored: str, target: str) -> Conversion:
    """A prepared :class:`Conversion` of the stored instance at *relative* (header read, first frame done).

    Raises TranscodeError (unsupported syntax, corrupt first frame) or
    OSError (file missing) before any byte is produced.
    """
    fp = store.open(relative)
    return Conversion(fp, stored, target, label=f"instance {relative}", tmp_dir=store.tmp).prepare()


def transcode(store: InstanceStore, relative: str, stored: str, target: str) -> Iterator[bytes]:
    """The Part-10 bytes of the stored instance at *relative* converted to *target*, piece by piece."""
    return open_conversion(store, relative, stored, target).chunks()


def _write(conversion: Conversion, path: Path) -> int:
    """Write *conversion* to *path*, filling the Basic Offset Table; return the size."""
    size = 0
    meta_length = -1
    with open(path, "wb") as out:
        for piece in conversion.chunks(reserve_offset_table=True):
            if meta_length < 0:
                meta_length = len(piece)  # the first piece is the preamble and file meta
            out.write(piece)
            size += len(piece)
        if conversion.bot_position >= 0 and conversion.frame_offsets:
            out.seek(meta_length + conversion.bot_position)
            out.write(struct.pack(f"<{len(conversion.frame_offsets)}I", *conversion.frame_offsets))
    return size


def transcode_to_temp(store: InstanceStore, relative: str, stored: str, target: str) -> Path:
    """Convert the stored instance at *relative* into a new file in the store's temp folder.

    The caller owns the file and deletes it when sent (``path.unlink()``);
    on failure nothing is left behind.
    """
    conversion = open_conversion(store, relative, stored, target)
    path = store.temp_path()
    try:
        _write(conversion, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def transcode_file(source: Path, stored: str, target: str, tmp_dir: Path) -> Path:
    """Convert the Part-10 file *source* (stored as *stored*) into a new file in *tmp_dir*.

    For a door that holds an absolute path (the DIMSE sender's ``Outgoing.path``,
    the ingest path's received temp file); the result is a new file in
    *tmp_dir* (pass the store's temp folder) that the caller deletes.  Raises
    TranscodeError naming the file.
    """
    fp = open(source, "rb")  # noqa: SIM115 - the conversion owns and closes it
    conversion = Conversion(fp, stored, target, label=f"file {source.name}", tmp_dir=tmp_dir).prepare()
    # A fresh name: two doors may convert the same instance to the same syntax at once.
    out = tmp_dir / f"{uuid.uuid4().hex}.{target}.part"
    try:
        _write(conversion, out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    log.debug("converted %s to %s (%d bytes)", source.name, target, os.path.getsize(out))
    return out


def convert_for_storage(received: Path, syntax: str, target: str, tmp_dir: Path) -> Path | None:
    """``[storage].transcode_to`` for the ingest path: the file to store instead of *received*, or None.

    None means "store as received": no target configured, already in it,
    or an instance that cannot be converted (no pixel data to compress, a
    syntax the node cannot decode, a damaged codestream); the reason is
    logged, the data is never refused for it.  The caller stores the
    returned file (it is in *tmp_dir*, the store's temp folder, so a rename
    puts it in place), indexes it with transfer syntax *target* and its own
    size, and deletes both temp files as usual.
    """
    if not target or syntax == target:
        return None
    verdict = plan(syntax, [target])
    if verdict.action is not Action.TRANSCODE:
        log.info("storing %s as received (%s): %s", received.name, syntax, verdict.reason)
        return None
    try:
        return transcode_file(received, syntax, target, tmp_dir)
    except TranscodeError as exc:
        log.warning("storing %s as received: %s", received.name, exc)
        return None


def convert_frame(frame: bytes, stored: str, target: str, fmt: PixelFormat) -> tuple[bytes, PixelFormat]:
    """One stored frame (native bytes or a codestream) in *target*; raises CodecError."""
    arr, decoded = decode(frame, stored, fmt)
    return encode(arr, target, decoded)
