"""A stored instance is a whole data set: its elements fill the file exactly.

The ingest path parses a header only up to the pixel data (pydicom, values
above 16 KiB deferred), so a data set cut short or declaring more bytes than
it has would otherwise be acknowledged and served truncated.  :func:`check`
walks every element header from the end of the file meta to the end of the
file, reading tag, VR and length and seeking over each value (nothing is
decoded): undefined-length sequences and items are walked to their
delimiters, encapsulated pixel data item by item, an ``UN`` of undefined
length as implicit VR little endian (PS3.5 6.2.2).  The walk runs over a
read-only memory map, so a value it skips is never read from the disk.

Deflated Explicit VR Little Endian can only be checked by inflating it: the
data set is inflated (bounded by :data:`MAX_INFLATED`) and the inflated bytes
walked the same way.  pydicom inflates such a data set into memory anyway to
read its header, so this costs one more inflation of a (rare, usually small)
data set; run first, it also refuses a deflate bomb before pydicom would
inflate it.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DEFLATED = "1.2.840.10008.1.2.1.99"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"

# Inflated size a deflated data set may reach (memory is bounded by it; pydicom
# holds the whole inflated data set too when it reads the header).
MAX_INFLATED = 256 * 1024 * 1024
# Nesting of undefined-length sequences and items (bounds the recursion).
MAX_DEPTH = 64

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_INFLATE_STEP = 1024 * 1024
# Files up to this size are read whole (cheaper than setting up a memory map).
_READ_WHOLE = 256 * 1024
_SHORT_VRS = frozenset(
    {
        b"AE",
        b"AS",
        b"AT",
        b"CS",
        b"DA",
        b"DS",
        b"DT",
        b"FD",
        b"FL",
        b"IS",
        b"LO",
        b"LT",
        b"PN",
        b"SH",
        b"SL",
        b"SS",
        b"ST",
        b"TM",
        b"UI",
        b"UL",
        b"US",
    }
)
# (explicit VR header, 4-byte length, implicit VR / item header) readers per byte order.
_READERS = {
    little: tuple(struct.Struct(("<" if little else ">") + fmt).unpack_from for fmt in ("HH2sH", "I", "HHI"))
    for little in (True, False)
}


class Incomplete(ValueError):
    """The file is not one whole data set; the message says where and why."""


@dataclass(frozen=True)
class Meta:
    """Where the data set starts and how it is encoded."""

    start: int  # file offset of the first data set byte
    transfer_syntax: str
    # The top-level elements asked for (``check_file(f, collect=...)``): tag -> (VR or None, value).
    elements: dict[int, tuple[bytes | None, bytes]] | None = None

    @property
    def deflated(self) -> bool:
        return self.transfer_syntax == DEFLATED


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def read_meta(buf: bytes | mmap.mmap, size: int) -> Meta:
    """The file meta of a Part-10 file in *buf* (explicit VR little endian, group 0002)."""
    if size < 132 or buf[128:132] != b"DICM":
        raise Incomplete("not a DICOM Part-10 file (no 'DICM' prefix)")
    pos, syntax = 132, ""
    while size - pos >= 8:
        group, element = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            break
        vr = buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if size - pos < 12:
                raise Incomplete(f"file meta truncated: ends inside the header of (0002,{element:04X})")
            (length,) = struct.unpack_from("<I", buf, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            pos += 8
        if length > size - pos:
            raise Incomplete(
                f"file meta truncated: (0002,{element:04X}) declares {length} bytes, {size - pos} remain"
            )
        if element == 0x0010:
            syntax = bytes(buf[pos : pos + length]).rstrip(b"\0 ").decode("ascii", "replace")
        pos += length
    return Meta(pos, syntax)


def check(path: Path) -> Meta:
    """Raise :class:`Incomplete` unless the data set of the Part-10 file at *path* fills it exactly."""
    with open(path, "rb") as f:
        return check_file(f)


def check_file(f: BinaryIO, collect: frozenset[int] | None = None) -> Meta:
    """:func:`check` on an open file (read from its start; its position is left anywhere).

    With *collect*, the values of those top-level tags (of defined length)
    are picked up on the way and returned in :attr:`Meta.elements`: the
    ingest path reads its header from them instead of parsing the file again.
    """
    size = os.fstat(f.fileno()).st_size
    if size < 132:
        raise Incomplete(f"not a DICOM Part-10 file ({size} bytes)")
    if size <= _READ_WHOLE:
        f.seek(0)
        return _check(f.read(), size, collect)
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _check(buf, size, collect)


def _check(buf, size: int, collect: frozenset[int] | None = None) -> Meta:
    meta = read_meta(buf, size)
    found: dict[int, tuple[bytes | None, bytes]] | None = {} if collect is not None else None
    if meta.deflated:
        data = _inflate(buf, meta.start, size)
        walk(data, 0, len(data), little=True, implicit=False, collect=collect, found=found)
    else:
        little = meta.transfer_syntax != EXPLICIT_BIG
        implicit = meta.transfer_syntax == IMPLICIT_LITTLE
        walk(buf, meta.start, size, little=little, implicit=implicit, collect=collect, found=found)
    return meta if found is None else Meta(meta.start, meta.transfer_syntax, found)


def _inflate(buf: mmap.mmap, start: int, size: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    pos = start
    try:
        while pos < size and not inflater.eof:
            chunk = inflater.decompress(buf[pos : pos + _INFLATE_STEP], MAX_INFLATED + 1 - len(out))
            pos += _INFLATE_STEP
            out += chunk
            while inflater.unconsumed_tail and not inflater.eof and len(out) <= MAX_INFLATED:
                out += inflater.decompress(inflater.unconsumed_tail, MAX_INFLATED + 1 - len(out))
            if len(out) > MAX_INFLATED:
                raise Incomplete(f"deflated data set too large: inflates to more than {MAX_INFLATED} bytes")
    except zlib.error as exc:
        raise Incomplete(f"deflated data set malformed: not valid deflate data ({exc})") from None
    if not inflater.eof:
        raise Incomplete("deflated data set truncated: its deflate stream does not end")
    # PS3.5 A.5 pads the stream with a NUL byte to an even length; some writers
    # append a zlib/gzip style checksum trailer (up to 8 bytes).  Tolerate
    # those; more than that is not part of the data set.
    trailing = inflater.unused_data + bytes(buf[min(pos, size) : size])
    if len(trailing) > 8 and trailing.strip(b"\0"):
        raise Incomplete(f"deflated data set overrun: {len(trailing)} bytes follow its end")
    return bytes(out)


def walk(
    buf,
    pos: int,
    end: int,
    *,
    little: bool,
    implicit: bool,
    collect: frozenset[int] | None = None,
    found: dict[int, tuple[bytes | None, bytes]] | None = None,
) -> None:
    """Check that the elements from *pos* fill *buf* exactly up to *end*.

    The top-level elements whose tags are in *collect* are put in *found*.
    """
    pos = _elements(buf, pos, end, little, implicit, 0, in_item=False, collect=collect, found=found)
    if pos != end:  # pragma: no cover - _elements only returns early inside items
        raise Incomplete(f"data set truncated: ends at byte {pos} of {end}")


def _elements(
    buf,
    pos: int,
    end: int,
    little: bool,
    implicit: bool,
    depth: int,
    *,
    in_item: bool,
    collect: frozenset[int] | None = None,
    found: dict[int, tuple[bytes | None, bytes]] | None = None,
) -> int:
    """Walk a data set from *pos*; return where it ends (after the item delimiter inside an item)."""
    explicit_at, long_at, implicit_at = _READERS[little]
    short_vrs, long_vrs = _SHORT_VRS, _LONG_VRS
    wanted = collect or frozenset()
    while pos < end:
        if end - pos < 8:
            if not in_item and not any(buf[pos:end]):
                return end  # a few NUL bytes of padding after the last element
            raise Incomplete(
                f"data set truncated: ends inside an element header (byte {pos}, {end - pos} left)"
            )
        if implicit:
            group, element, length = implicit_at(buf, pos)
            vr = None
            pos += 8
        else:
            group, element, vr, length = explicit_at(buf, pos)
            if vr in short_vrs:
                pos += 8
            elif vr in long_vrs:
                if end - pos < 12:
                    where = _tag(group << 16 | element)
                    raise Incomplete(f"data set truncated: ends inside the header of {where} (byte {pos})")
                (length,) = long_at(buf, pos + 8)
                pos += 12
            else:
                # Not a VR: an explicit data set that switched to implicit VR here (pydicom reads those too).
                group, element, length = implicit_at(buf, pos)
                vr = None
                pos += 8
        if group == 0xFFFE:
            tag = group << 16 | element
            if tag == _ITEM_END and in_item:
                return pos
            raise Incomplete(f"data set malformed: unexpected delimiter {_tag(tag)} at byte {pos - 8}")
        if length == _UNDEFINED:
            tag = group << 16 | element
            if tag == _PIXEL_DATA:
                pos = _fragments(buf, pos, end, little)
            elif vr is None or vr == b"SQ":
                pos = _sequence(buf, pos, end, little, implicit, depth + 1, tag)
            elif vr == b"UN":
                # An undefined-length UN holds implicit VR little endian items (PS3.5 6.2.2).
                pos = _sequence(buf, pos, end, True, True, depth + 1, tag)
            else:
                raise Incomplete(
                    f"data set malformed: {_tag(tag)} {vr.decode('ascii')} of undefined length (byte {pos})"
                )
        elif length > end - pos:
            raise Incomplete(
                f"data set truncated: {_tag(group << 16 | element)} declares {length} bytes, "
                f"{end - pos} remain (byte {pos}; or its length is wrong)"
            )
        else:
            if wanted and (group << 16 | element) in wanted:
                found[group << 16 | element] = (vr, bytes(buf[pos : pos + length]))
            pos += length
    if in_item:
        raise Incomplete("data set truncated: ends inside a sequence item (no item delimiter)")
    return pos


def _sequence(buf, pos: int, end: int, little: bool, implicit: bool, depth: int, owner: int) -> int:
    """Walk the items of an undefined-length sequence; return the position after its delimiter."""
    if depth > MAX_DEPTH:
        raise Incomplete(
            f"data set too deep: sequences nested deeper than {MAX_DEPTH} levels at {_tag(owner)}"
        )
    header = _READERS[little][2]
    while True:
        if end - pos < 8:
            raise Incomplete(f"data set truncated: ends inside the sequence {_tag(owner)} (no delimiter)")
        group, element, length = header(buf, pos)
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise Incomplete(
                f"data set malformed: {_tag(tag)} instead of an item of {_tag(owner)} at byte {pos - 8}"
            )
        if length == _UNDEFINED:
            pos = _elements(buf, pos, end, little, implicit, depth, in_item=True)
        elif length > end - pos:
            raise Incomplete(
                f"data set truncated: an item of {_tag(owner)} declares {length} bytes, {end - pos} remain"
            )
        else:
            pos += length


def _fragments(buf, pos: int, end: int, little: bool) -> int:
    """Walk encapsulated pixel data (items of defined length, then the sequence delimiter)."""
    header = _READERS[little][2]
    while True:
        if end - pos < 8:
            raise Incomplete("data set truncated: encapsulated pixel data ends without its delimiter")
        group, element, length = header(buf, pos)
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM or length == _UNDEFINED:
            raise Incomplete(
                f"data set malformed: {_tag(tag)} instead of a pixel data fragment at byte {pos - 8}"
            )
        if length > end - pos:
            raise Incomplete(
                f"data set truncated: a pixel data fragment declares {length} bytes, {end - pos} remain"
            )
        pos += length
