"""Where the pixel data of a stored file starts, read from its header (never decoded)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset

PIXEL_TAGS = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}
UNDEFINED = 0xFFFFFFFF
DEFLATED = "1.2.840.10008.1.2.1.99"
# Explicit VRs whose length field is 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass(frozen=True)
class PixelElement:
    """The pixel data element of a file: where its value starts and how long it is."""

    tag: int
    vr: str
    offset: int  # file offset of the value's first byte
    length: int  # UNDEFINED for encapsulated pixel data


def read_header(fp: BinaryIO, defer_size: int | None = None) -> tuple[Dataset, PixelElement | None]:
    """Parse *fp* up to its pixel data; return the data set and the pixel element, if any.

    pydicom leaves the file positioned at the start of the pixel data
    element when it stops before it, so one more 12-byte read tells where
    the value is without touching it.
    """
    ds = dcmread(fp, stop_before_pixels=True, defer_size=defer_size)
    syntax = ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")
    if syntax == DEFLATED:
        # pydicom inflated the data set into memory: file offsets mean nothing.
        return ds, None
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return ds, None
    little = syntax != "1.2.840.10008.1.2.2"
    group, element = struct.unpack("<HH" if little else ">HH", head[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        return ds, None
    end = "<" if little else ">"
    if syntax == "1.2.840.10008.1.2":  # implicit VR
        (length,) = struct.unpack(end + "I", head[4:8])
        vr, value_at = PIXEL_TAGS[tag], start + 8
    else:
        raw_vr = head[4:6]
        vr = raw_vr.decode("ascii", "replace")
        if raw_vr in _LONG_VRS:
            (length,) = struct.unpack(end + "I", head[8:12])
            value_at = start + 12
        else:
            (length,) = struct.unpack(end + "H", head[6:8])
            value_at = start + 8
    return ds, PixelElement(tag, vr, value_at, length)
