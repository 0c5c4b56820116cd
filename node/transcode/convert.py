"""Convert one stored instance to another transfer syntax, frame by frame, as a Part-10 stream.

The header (everything before the pixel data) is parsed once and written in
the target's encoding with pydicom's writer (raw values are copied as
stored when the encoding stays the same); the pixel module and Lossy Image
Compression attributes are set from what the first converted frame turned
out to be.  Then frames are read, converted and written one at a time, so
memory is bounded by a frame whatever the instance's size.  Elements after
the pixel data (trailing padding, private tails) follow, re-encoded.

Native little endian to native little endian (implicit <-> explicit, and a
deflated source once inflated) copies the pixel bytes in chunks without
decoding them.  A deflated source is inflated as a stream into an anonymous
temp file first (random access to its frames needs a plain file); a deflated
target is deflated as it is written.
"""

from __future__ import annotations

import itertools
import logging
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from ..dicomweb.pixels import UNDEFINED, PixelElement, read_header
from ..part10 import header_bytes
from . import lossy
from . import syntaxes as ts
from .codec import CodecError, PixelFormat, decode, encode

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
_ITEM_TAG = 0xE000FFFE  # (FFFE,E000) read as little-endian uint32
_SEQ_DELIMITER = 0xE0DDFFFE
# Where a colour image's pixel attributes live: removed and set again from the converted frames.
_PIXEL_MODULE = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
)


class TranscodeError(Exception):
    """An instance cannot be converted; the message names the instance and the reason.

    ``corrupt`` tells a stored instance whose data cannot be read (a damaged
    codestream, a short file: the store's problem) from one the node cannot
    express in the target (a format or syntax it does not write: the
    request's problem).
    """

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


class Conversion:
    """One instance being converted: :meth:`prepare` checks, :meth:`chunks` yields the Part-10 bytes.

    ``prepare`` parses the header and converts the first frame, so an
    unsupported syntax or a corrupt first frame is known before a door
    commits to a response; a later corrupt frame raises TranscodeError
    from ``chunks``.  The source file is closed when ``chunks`` ends or on
    :meth:`close`.
    """

    def __init__(self, fp: BinaryIO, stored: str, target: str, *, label: str, tmp_dir: Path) -> None:
        self.fp = fp
        self.stored = stored
        self.target = target
        self.label = label
        self.tmp_dir = tmp_dir
        self.header_ds: Dataset | None = None
        self.pixel: PixelElement | None = None
        self.frame_count = 0
        self.in_fmt: PixelFormat | None = None
        self.out_fmt: PixelFormat | None = None
        self._first: bytes | None = None  # the first converted frame, kept from prepare()
        self._copy_pixels = False
        self._inflated: BinaryIO | None = None
        self.frame_offsets: list[int] = []  # of each output frame item, from the first item (BOT values)
        self.bot_position = -1  # where the Basic Offset Table's value starts in the output, if reserved

    # -- set-up ----------------------------------------------------------------

    def fail(self, reason: str, *, corrupt: bool = False) -> TranscodeError:
        return TranscodeError(
            f"{self.label}: cannot convert from {ts.name(self.stored)} to {ts.name(self.target)}: {reason}",
            corrupt=corrupt,
        )

    def prepare(self) -> Conversion:
        """Read the header and convert the first frame; raise TranscodeError if that fails."""
        try:
            self._prepare()
        except TranscodeError:
            self.close()
            raise
        except (CodecError, ValueError, KeyError, AttributeError, OSError, EOFError, struct.error) as exc:
            self.close()
            raise self.fail(str(exc) or type(exc).__name__, corrupt=True) from exc
        return self

    def _prepare(self) -> None:
        if self.target not in ts.TARGETS:
            raise self.fail("the node does not write that transfer syntax")
        if self.stored not in ts.DECODABLE:
            raise self.fail("the node cannot decode the stored transfer syntax")
        source_syntax = self.stored
        if self.stored == ts.DEFLATED:
            self._inflate()
            source_syntax = ts.EXPLICIT
        ds, pixel = read_header(self.fp)
        self.header_ds, self.pixel = ds, pixel
        self.source_syntax = source_syntax
        if pixel is None:
            # No pixel data (a report, a waveform...): only the encoding of the data set changes.
            if ts.is_encapsulated(self.target):
                raise self.fail("the instance has no pixel data to compress")
            self._copy_pixels = True
            return
        encapsulated_in = pixel.length == UNDEFINED
        self.frame_count = int(ds.get("NumberOfFrames") or 1)
        if source_syntax in ts.NATIVE_LE and self.target in ts.NATIVE and not encapsulated_in:
            self._copy_pixels = True  # same pixel bytes: no decoding
            return
        if pixel.tag != 0x7FE00010:
            raise self.fail("float pixel data can only change between native syntaxes")
        self.in_fmt = PixelFormat.of(ds, pixel.vr if pixel.vr in ("OB", "OW") else "OW")
        if not encapsulated_in and self.in_fmt.bits_allocated % 8:
            raise self.fail(
                "bit-packed pixel data (BitsAllocated 1) is only re-encoded between native syntaxes"
            )
        first_in = next(self._stored_frames(), None)
        if first_in is None:
            raise self.fail("the pixel data holds no frame")
        self._source_lossy = lossy.source_is_lossy(ds, self.stored, first_in)
        self._first = self._convert(first_in, 1)

    def _inflate(self) -> None:
        """Replace the deflated source by an anonymous temp file holding it as explicit VR little endian."""
        meta_end, sop_class, sop_uid = _file_meta_end(self.fp)
        out = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115 - replaces self.fp, closed with it
        out.write(header_bytes(sop_class, sop_uid, ts.EXPLICIT))
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self.fp.seek(meta_end)
        while chunk := self.fp.read(CHUNK):
            out.write(inflater.decompress(chunk))
        out.write(inflater.flush())
        out.seek(0)
        self.fp.close()
        self.fp = self._inflated = out

    # -- frames ----------------------------------------------------------------

    def _stored_frames(self) -> Iterator[bytes]:
        """The stored frames, in order, read one at a time."""
        assert self.pixel is not None and self.in_fmt is not None
        if self.pixel.length == UNDEFINED:
            self.fp.seek(self.pixel.offset)
            ext = None
            ds = self.header_ds
            if ds is not None and "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
                ext = (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
            frames = generate_frames(self.fp, number_of_frames=self.frame_count, extended_offsets=ext)
            yield from itertools.islice(
                frames, self.frame_count
            )  # JPEG may split into more: the header counts
            return
        size = self.in_fmt.frame_length
        for n in range(self.frame_count):
            self.fp.seek(self.pixel.offset + n * size)
            data = self.fp.read(size)
            if len(data) != size:
                raise self.fail(
                    f"frame {n + 1}: the pixel data is shorter than its header says", corrupt=True
                )
            yield data

    def _convert(self, frame: bytes, number: int) -> bytes:
        assert self.in_fmt is not None
        try:
            arr, fmt = decode(frame, self.source_syntax, self.in_fmt)
        except CodecError as exc:
            raise self.fail(f"frame {number}: {exc}", corrupt=True) from None
        try:
            out, fmt = encode(arr, self.target, fmt)
        except CodecError as exc:
            raise self.fail(f"frame {number}: {exc}") from None
        if self.out_fmt is None:
            self.out_fmt = fmt
            self._ratio = (len(arr.tobytes()) / len(out)) if out else None
        return out

    # -- output ----------------------------------------------------------------

    def _output_header(self) -> Dataset:
        assert self.header_ds is not None
        ds = self.header_ds
        if self.out_fmt is not None:
            fmt = self.out_fmt
            for keyword in _PIXEL_MODULE:
                if keyword in ds:
                    del ds[keyword]
            ds.SamplesPerPixel = fmt.samples
            ds.PhotometricInterpretation = fmt.photometric
            ds.BitsAllocated = fmt.bits_allocated
            ds.BitsStored = fmt.bits_stored
            ds.HighBit = fmt.bits_stored - 1
            ds.PixelRepresentation = fmt.pixel_representation
            if fmt.samples > 1:
                ds.PlanarConfiguration = 0
            lossy.mark(
                ds,
                source_lossy=self._source_lossy,
                source_syntax=self.stored,
                target=self.target,
                ratio=self._ratio,
            )
        if ts.is_encapsulated(self.source_syntax) != ts.is_encapsulated(self.target) or self.out_fmt:
            for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
                if keyword in ds:
                    del ds[keyword]
            # An icon's pixel data is encoded in the data set's syntax: it cannot follow unconverted.
            if "IconImageSequence" in ds:
                del ds["IconImageSequence"]
        return ds

    def _encode_dataset(self, ds: Dataset) -> bytes:
        buf = DicomBytesIO()
        buf.is_little_endian = True
        buf.is_implicit_VR = self.target == ts.IMPLICIT
        write_dataset(buf, ds)
        return buf.getvalue()

    def _pixel_header(self, length: int, vr: str) -> bytes:
        tag = self.pixel.tag if self.pixel else 0x7FE00010
        group, element = tag >> 16, tag & 0xFFFF
        if self.target == ts.IMPLICIT:
            return struct.pack("<HHI", group, element, length)
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, length)

    def chunks(self, *, reserve_offset_table: bool = False) -> Iterator[bytes]:
        """The converted instance as Part-10 bytes, in pieces of at most about a frame or CHUNK.

        With *reserve_offset_table* the Basic Offset Table of encapsulated
        output is written as zeros for every frame; ``bot_position`` and
        ``frame_offsets`` then say what to write there (for a seekable file).
        """
        try:
            body = self._body(reserve_offset_table)
            if self.target == ts.DEFLATED:
                body = _deflate(body)
            assert self.header_ds is not None
            meta = self.header_ds.file_meta
            yield header_bytes(
                str(meta.MediaStorageSOPClassUID or self.header_ds.SOPClassUID),
                str(meta.MediaStorageSOPInstanceUID or self.header_ds.SOPInstanceUID),
                self.target,
                str(meta.get("SourceApplicationEntityTitle", "") or ""),
            )
            yield from body
        except TranscodeError:
            raise
        except (CodecError, ValueError, KeyError, AttributeError, OSError, EOFError, struct.error) as exc:
            raise self.fail(str(exc) or type(exc).__name__, corrupt=True) from exc
        finally:
            self.close()

    def _body(self, reserve_offset_table: bool) -> Iterator[bytes]:
        assert self.header_ds is not None
        header = self._encode_dataset(self._output_header())
        written = len(header)
        yield header
        if self.pixel is not None:
            if self._copy_pixels:
                yield from self._copied_pixels()
            elif ts.is_encapsulated(self.target):
                yield from self._encapsulated_pixels(written, reserve_offset_table)
            else:
                yield from self._native_pixels()
        trailing = self._trailing()
        if trailing:
            yield trailing

    def _copied_pixels(self) -> Iterator[bytes]:
        pixel = self.pixel
        assert pixel is not None
        yield self._pixel_header(pixel.length, pixel.vr)
        self.fp.seek(pixel.offset)
        left = pixel.length
        while left:
            data = self.fp.read(min(CHUNK, left))
            if not data:
                raise self.fail("the pixel data is shorter than its header says")
            left -= len(data)
            yield data

    def _native_pixels(self) -> Iterator[bytes]:
        assert self._first is not None and self.out_fmt is not None
        total = len(self._first) * self.frame_count
        yield self._pixel_header(total + total % 2, self.out_fmt.pixel_vr)
        written = 0
        for n, frame in enumerate(self._stored_frames(), 1):
            data = self._first if n == 1 else self._convert(frame, n)
            assert data is not None
            if len(data) != len(self._first):
                raise self.fail(f"frame {n} decodes to {len(data)} bytes, frame 1 to {len(self._first)}")
            written += 1
            yield data
        if written != self.frame_count:
            raise self.fail(f"the pixel data holds {written} frames, not {self.frame_count}", corrupt=True)
        if total % 2:
            yield b"\0"

    def _encapsulated_pixels(self, offset: int, reserve: bool) -> Iterator[bytes]:
        head = self._pixel_header(UNDEFINED, "OB")
        table = b"\0" * (4 * self.frame_count) if reserve and self.frame_count > 1 else b""
        self.bot_position = offset + len(head) + 8 if table else -1
        yield head + struct.pack("<HHI", 0xFFFE, 0xE000, len(table)) + table
        position = 0
        for n, frame in enumerate(self._stored_frames(), 1):
            data = self._first if n == 1 else self._convert(frame, n)
            assert data is not None
            pad = b"\0" if len(data) % 2 else b""
            self.frame_offsets.append(position)
            position += 8 + len(data) + len(pad)
            yield struct.pack("<HHI", 0xFFFE, 0xE000, len(data) + len(pad)) + data + pad
        if len(self.frame_offsets) != self.frame_count:
            raise self.fail(
                f"the pixel data holds {len(self.frame_offsets)} frames, not {self.frame_count}", corrupt=True
            )
        yield struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)

    def _trailing(self) -> bytes:
        """Elements after the pixel data, re-encoded (usually none)."""
        if self.pixel is None:
            return b""
        end = _pixel_end(self.fp, self.pixel)
        self.fp.seek(0, 2)
        if self.fp.tell() <= end:
            return b""
        self.fp.seek(end)
        implicit = self.source_syntax == ts.IMPLICIT
        rest = read_dataset(self.fp, implicit, self.source_syntax != ts.BIG_ENDIAN)
        return self._encode_dataset(rest) if len(rest) else b""

    def close(self) -> None:
        self.fp.close()


def _pixel_end(fp: BinaryIO, pixel: PixelElement) -> int:
    """The file offset just past the pixel data element (walking item headers of encapsulated data)."""
    if pixel.length != UNDEFINED:
        return pixel.offset + pixel.length
    at = pixel.offset
    while True:
        fp.seek(at)
        head = fp.read(8)
        if len(head) < 8:
            return at
        tag, length = struct.unpack("<II", head)
        at += 8
        if tag == _SEQ_DELIMITER:
            return at
        if tag != _ITEM_TAG:
            raise ValueError(f"unexpected tag {tag:08X} inside the encapsulated pixel data")
        at += length


def _file_meta_end(fp: BinaryIO) -> tuple[int, str, str]:
    """Offset past the file meta of the Part-10 file *fp*, its SOP class and instance UIDs."""
    fp.seek(0)
    if fp.read(132)[128:] != b"DICM":
        raise ValueError("not a Part-10 file (no DICM prefix)")
    at, values = 132, {}
    while True:
        fp.seek(at)
        head = fp.read(8)
        if len(head) < 8:
            break
        group, element, vr = struct.unpack("<HH2s", head[:6])
        if group != 0x0002:
            break
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ"):
            (length,) = struct.unpack("<I", fp.read(4))
            value_at = at + 12
        else:
            (length,) = struct.unpack("<H", head[6:8])
            value_at = at + 8
        if element in (0x0002, 0x0003):
            fp.seek(value_at)
            values[element] = fp.read(length).rstrip(b"\0 ").decode("ascii", "replace")
        at = value_at + length
    return at, values.get(0x0002, ""), values.get(0x0003, "")


def _deflate(body: Iterator[bytes]) -> Iterator[bytes]:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    for piece in body:
        out = deflater.compress(piece)
        if out:
            yield out
    yield deflater.flush()


class FrameConverter:
    """Frames of one stored instance converted to *target* one by one (WADO-RS frames, rendering)."""

    def __init__(self, header: Dataset, pixel_vr: str, stored: str, target: str, *, label: str) -> None:
        self.stored, self.target, self.label = stored, target, label
        try:
            self.fmt = PixelFormat.of(header, pixel_vr if pixel_vr in ("OB", "OW") else "OW")
        except CodecError as exc:
            raise TranscodeError(f"{label}: {exc}", corrupt=True) from None

    def __call__(self, number: int, frame: bytes) -> bytes:
        """Frame *number* (stored bytes *frame*) in the target syntax; raises TranscodeError."""
        where = f"{self.label}, frame {number}"
        try:
            arr, fmt = decode(frame, self.stored, self.fmt)
        except CodecError as exc:
            raise TranscodeError(f"{where}: {exc}", corrupt=True) from None
        try:
            return encode(arr, self.target, fmt)[0]
        except CodecError as exc:
            raise TranscodeError(f"{where}: {exc}") from None

    def stream(self, numbers: list[int], frames: Iterator[bytes]) -> Iterator[bytes]:
        """Convert *frames* (stored, in the order of *numbers*): the first now, so that a failure
        is raised here, before a door answers; the rest as the result is iterated."""
        try:
            first = self(numbers[0], next(frames))
        except (ValueError, OSError, StopIteration) as exc:
            close = getattr(frames, "close", None)
            if close:
                close()
            if isinstance(exc, TranscodeError):
                raise
            raise TranscodeError(f"{self.label}, frame {numbers[0]}: {exc}", corrupt=True) from None

        def rest() -> Iterator[bytes]:
            yield first
            for number, frame in zip(numbers[1:], frames, strict=False):
                yield self(number, frame)

        return rest()
