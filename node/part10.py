"""The file meta the node writes in front of every data set it frames as Part 10."""

from __future__ import annotations

import struct

from pydicom.dataset import FileMetaDataset

from .uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

_VERSION = b"\x00\x01"  # (0002,0001) File Meta Information Version


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = ""
) -> FileMetaDataset:
    """File meta (PS3.10 7.1) naming the node as the implementation that wrote the file."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = _VERSION
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    return meta


def _short(element: int, vr: bytes, value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(raw)) + raw


def header_bytes(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and the file meta of :func:`file_meta`, encoded.

    Encoded by hand (explicit VR little endian, PS3.10 7.1): this runs for
    every received C-STORE, and pydicom's writer cost more than the rest of
    framing the file.  tests/test_part10.py checks it against pydicom's.
    """
    elements = [
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, len(_VERSION)) + _VERSION,
        _short(0x0002, b"UI", sop_class_uid, b"\0"),
        _short(0x0003, b"UI", sop_instance_uid, b"\0"),
        _short(0x0010, b"UI", transfer_syntax, b"\0"),
        _short(0x0012, b"UI", IMPLEMENTATION_CLASS_UID, b"\0"),
        _short(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME, b" "),
    ]
    if source_ae:
        elements.append(_short(0x0016, b"AE", source_ae, b" "))
    body = b"".join(elements)
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\0" * 128 + b"DICM" + group_length + body
