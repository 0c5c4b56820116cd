"""Build a Part-10 instance from metadata plus bulk data (the dcm4chee STOW-RS convention).

A JSON/XML data set whose Pixel Data or Encapsulated Document is a
``BulkDataURI`` pointing at a spooled part becomes a complete instance:

- a JPEG image -> encapsulated pixel data (JPEG Baseline / Extended /
  Progressive / Lossless transfer syntax, chosen from the SOF marker), with
  Rows, Columns, SamplesPerPixel, PhotometricInterpretation, Bits*,
  HighBit and PixelRepresentation taken from the JPEG header;
- MPEG-2 / MPEG-4 video -> encapsulated pixel data in the video transfer
  syntax (Rows/Columns of MPEG-2 from its sequence header);
- a PDF -> Encapsulated PDF, an XML (CDA) document -> Encapsulated CDA;
- other bulk data -> the element's value, as sent (native pixel data too).

Missing SOP Class / SOP Instance / Series / Study UIDs are supplied (2.25
UUID form), and the file meta carries the node's implementation class UID.
Bulk values are streamed from their part file into the instance file, never
held in memory.  A value the metadata gave and the bulk data contradicts
(e.g. Rows) is corrected and reported as a coercion warning (0xB000).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from ..part10 import file_meta
from ..statuses import COERCION, MISSING_BULKDATA, TRANSFER_SYNTAX_NOT_SUPPORTED
from ..uids import new_uid
from .json_model import BulkRef

# FailureReason / WarningReason values (PS3.18 Table 10.5.3-1 and dcm4chee's).

PIXEL_DATA = 0x7FE00010
ENCAPSULATED_DOCUMENT = 0x00420011

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ENCAPSULATED_CDA = "1.2.840.10008.5.1.4.1.1.104.2"
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_PROGRESSIVE = "1.2.840.10008.1.2.4.55"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
MPEG2_MPML = "1.2.840.10008.1.2.4.100"
MPEG4_AVC_HP41 = "1.2.840.10008.1.2.4.102"

# Largest fragment an item length can describe (even, below 0xFFFFFFFF).
_MAX_FRAGMENT = 0xFFFFFFFE
_COPY_BUF = 1024 * 1024


class BuildError(ValueError):
    """The instance cannot be built; *code* is the FailureReason."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Bulk:
    """A spooled body part holding a bulk value."""

    path: Path
    size: int
    content_type: str  # media type of the part, lower case ("" when absent)


@dataclass
class Built:
    """A built Part-10 file (in the store's temp folder) and the warnings it earned."""

    path: Path
    warnings: list[int] = field(default_factory=list)


# -- sniffing ---------------------------------------------------------------


def kind_of(bulk: Bulk) -> str:
    """ "jpeg", "pdf", "xml", "mpeg2", "mp4" or "other", from the media type, else the bytes."""
    ct = bulk.content_type
    by_type = {
        "image/jpeg": "jpeg",
        "image/jpg": "jpeg",
        "application/pdf": "pdf",
        "text/xml": "xml",
        "application/xml": "xml",
        "application/hl7-cda+xml": "xml",
        "video/mpeg": "mpeg2",
        "video/mpeg2": "mpeg2",
        "video/mp4": "mp4",
        "video/h264": "mp4",
        "video/quicktime": "mp4",
    }
    if ct in by_type:
        return by_type[ct]
    with bulk.path.open("rb") as f:
        head = f.read(64)
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return "xml"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "mpeg2"
    if head[4:8] == b"ftyp":
        return "mp4"
    return "other"


# -- JPEG header ------------------------------------------------------------


@dataclass(frozen=True)
class JpegInfo:
    rows: int
    columns: int
    components: int
    precision: int
    transfer_syntax: str
    photometric: str
    lossy: bool


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise BuildError(MISSING_BULKDATA, "JPEG data ends inside its header")
    return data


def jpeg_info(path: Path) -> JpegInfo:
    """Read the JPEG markers up to the first scan: frame size, precision and process."""
    with path.open("rb") as f:
        if f.read(2) != b"\xff\xd8":
            raise BuildError(TRANSFER_SYNTAX_NOT_SUPPORTED, "bulk data is not a JPEG image (no SOI marker)")
        sof: tuple[int, bytes] | None = None
        adobe_transform: int | None = None
        while True:
            byte = _read_exact(f, 1)
            if byte != b"\xff":
                raise BuildError(TRANSFER_SYNTAX_NOT_SUPPORTED, "corrupt JPEG header (marker expected)")
            marker = _read_exact(f, 1)[0]
            while marker == 0xFF:  # fill bytes
                marker = _read_exact(f, 1)[0]
            if marker in (0x01, *range(0xD0, 0xD8)):
                continue  # markers without a length
            (length,) = struct.unpack(">H", _read_exact(f, 2))
            body = _read_exact(f, length - 2)
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                sof = (marker, body)
            elif marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
                adobe_transform = body[11]
            elif marker == 0xDA:
                break
        if sof is None:
            raise BuildError(TRANSFER_SYNTAX_NOT_SUPPORTED, "JPEG has no frame header (SOF) before its scan")
    marker, frame = sof
    precision, rows, columns, ncomp = struct.unpack(">BHHB", frame[:6])
    comps = [frame[6 + 3 * i : 9 + 3 * i] for i in range(ncomp)]
    if marker == 0xC0:
        ts, lossy = JPEG_BASELINE, True
    elif marker == 0xC1:
        ts, lossy = JPEG_EXTENDED, True
    elif marker == 0xC2:
        ts, lossy = JPEG_PROGRESSIVE, True
    elif marker == 0xC3:
        # Selection value 1 (first-order prediction) has its own transfer syntax.
        predictor = body[1 + 2 * body[0]] if body and len(body) > 1 + 2 * body[0] else 0
        ts, lossy = (JPEG_LOSSLESS_SV1 if predictor == 1 else JPEG_LOSSLESS), False
    else:
        raise BuildError(
            TRANSFER_SYNTAX_NOT_SUPPORTED,
            f"JPEG process of marker 0xFF{marker:02X} (hierarchical or arithmetic) "
            "has no DICOM transfer syntax",
        )
    if rows == 0:
        raise BuildError(
            TRANSFER_SYNTAX_NOT_SUPPORTED, "JPEG with the height defined later (DNL) is not supported"
        )
    if ncomp == 1:
        photometric = "MONOCHROME2"
    elif ncomp == 3:
        ids = bytes(c[0] for c in comps)
        if adobe_transform == 0 or ids == b"RGB" or not lossy:
            photometric = "RGB"
        else:
            sampling = {c[1] for c in comps}
            photometric = "YBR_FULL_422" if len(sampling) > 1 else "YBR_FULL"
    else:
        raise BuildError(TRANSFER_SYNTAX_NOT_SUPPORTED, f"JPEG with {ncomp} components (1 or 3 supported)")
    return JpegInfo(rows, columns, ncomp, precision, ts, photometric, lossy)


def mpeg2_size(path: Path) -> tuple[int, int] | None:
    """(rows, columns) from the first MPEG-2 sequence header, if found early in the stream."""
    with path.open("rb") as f:
        head = f.read(1024 * 1024)
    idx = head.find(b"\x00\x00\x01\xb3")
    if idx < 0 or len(head) < idx + 7:
        return None
    b = head[idx + 4 : idx + 7]
    columns = (b[0] << 4) | (b[1] >> 4)
    rows = ((b[1] & 0x0F) << 8) | b[2]
    return rows, columns


# -- building ---------------------------------------------------------------


def _set(ds: Dataset, keyword: str, value, warnings: list[int]) -> None:
    """Set *keyword*; a different value already present counts as a coercion."""
    if keyword in ds and ds.data_element(keyword).value not in (None, "", b""):
        old = ds.data_element(keyword).value
        if str(old) != str(value):
            warnings.append(COERCION)
    setattr(ds, keyword, value)


def _default(ds: Dataset, keyword: str, value) -> None:
    """Set *keyword* only when absent or empty."""
    if keyword not in ds or ds.data_element(keyword).value in (None, "", b""):
        setattr(ds, keyword, value)


@dataclass
class _Stream:
    """A top-level element whose value is copied from a file as the instance is written."""

    tag: int
    vr: str
    bulk: Bulk
    encapsulated: bool = False


def build_instance(
    ds: Dataset,
    refs: list[BulkRef],
    find_bulk: Callable[[str], Bulk | None],
    new_temp: Callable[[], Path],
    study_uid: str | None = None,
) -> Built:
    """Write *ds* with its bulk references resolved as a Part-10 file in the temp folder."""
    warnings: list[int] = []
    streams: list[_Stream] = []
    transfer_syntax = ExplicitVRLittleEndian
    for ref in refs:
        bulk = find_bulk(ref.uri)
        if bulk is None:
            raise BuildError(
                MISSING_BULKDATA,
                f"bulk data {ref.uri!r} of ({ref.tag >> 16:04X},{ref.tag & 0xFFFF:04X}) "
                "is not a part of the body (no matching Content-Location)",
            )
        stream = _Stream(
            ref.tag, ref.vr if ref.vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN") else "OB", bulk
        )
        if ref.tag == PIXEL_DATA:
            transfer_syntax = _pixel_data(ds, stream, warnings)
        elif ref.tag == ENCAPSULATED_DOCUMENT:
            _document(ds, stream)
        if ref.tag in ds:
            del ds[ref.tag]
        streams.append(stream)

    # File meta elements sent in the metadata are not data set elements: the meta is ours.
    for tag in [elem.tag for elem in ds if elem.tag.group == 0x0002]:
        del ds[tag]
    if "SOPClassUID" not in ds or not ds.SOPClassUID:
        raise BuildError(0xA900, "missing SOPClassUID (and no bulk data to infer it from)")
    _default(ds, "SOPInstanceUID", new_uid())
    _default(ds, "SeriesInstanceUID", new_uid())
    _default(ds, "StudyInstanceUID", study_uid or new_uid())
    # JSON and XML text is Unicode: say so unless the sender named a character set.
    _default(ds, "SpecificCharacterSet", "ISO_IR 192")

    meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, transfer_syntax)

    path = new_temp()
    try:
        _write(path, ds, meta, sorted(streams, key=lambda s: s.tag))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Built(path, sorted(set(warnings)))


def _pixel_data(ds: Dataset, stream: _Stream, warnings: list[int]) -> str:
    kind = kind_of(stream.bulk)
    if kind == "jpeg":
        info = jpeg_info(stream.bulk.path)
        _default(ds, "SOPClassUID", SECONDARY_CAPTURE)
        _set(ds, "Rows", info.rows, warnings)
        _set(ds, "Columns", info.columns, warnings)
        _set(ds, "SamplesPerPixel", info.components, warnings)
        _set(ds, "PhotometricInterpretation", info.photometric, warnings)
        bits_allocated = 8 if info.precision <= 8 else 16
        _set(ds, "BitsAllocated", bits_allocated, warnings)
        _set(ds, "BitsStored", info.precision, warnings)
        _set(ds, "HighBit", info.precision - 1, warnings)
        _set(ds, "PixelRepresentation", 0, warnings)
        if info.components > 1:
            _set(ds, "PlanarConfiguration", 0, warnings)
        if info.lossy:
            _default(ds, "LossyImageCompression", "01")
            _default(ds, "LossyImageCompressionMethod", "ISO_10918_1")
        _secondary_capture_defaults(ds)
        stream.encapsulated = True
        return info.transfer_syntax
    if kind in ("mpeg2", "mp4"):
        _default(ds, "SOPClassUID", VIDEO_PHOTOGRAPHIC)
        _default(ds, "Modality", "XC")
        if kind == "mpeg2" and (size := mpeg2_size(stream.bulk.path)):
            _set(ds, "Rows", size[0], warnings)
            _set(ds, "Columns", size[1], warnings)
        _default(ds, "SamplesPerPixel", 3)
        _default(ds, "PhotometricInterpretation", "YBR_PARTIAL_420")
        _default(ds, "PlanarConfiguration", 0)
        _default(ds, "BitsAllocated", 8)
        _default(ds, "BitsStored", 8)
        _default(ds, "HighBit", 7)
        _default(ds, "PixelRepresentation", 0)
        _default(ds, "NumberOfFrames", 1)
        stream.encapsulated = True
        return MPEG2_MPML if kind == "mpeg2" else MPEG4_AVC_HP41
    # Native pixel data, sent as bytes: stored as the value of the element.
    stream.vr = "OW" if int(ds.get("BitsAllocated", 8) or 8) > 8 else "OB"
    return ExplicitVRLittleEndian


def _secondary_capture_defaults(ds: Dataset) -> None:
    if ds.SOPClassUID == SECONDARY_CAPTURE:
        _default(ds, "Modality", "OT")
        _default(ds, "ConversionType", "WSD")


def _document(ds: Dataset, stream: _Stream) -> None:
    kind = kind_of(stream.bulk)
    if kind == "pdf":
        _default(ds, "SOPClassUID", ENCAPSULATED_PDF)
        _default(ds, "MIMETypeOfEncapsulatedDocument", "application/pdf")
    elif kind == "xml":
        _default(ds, "SOPClassUID", ENCAPSULATED_CDA)
        _default(ds, "MIMETypeOfEncapsulatedDocument", "text/XML")
    elif stream.bulk.content_type:
        _default(ds, "MIMETypeOfEncapsulatedDocument", stream.bulk.content_type)
    _default(ds, "Modality", "DOC")
    _default(ds, "ConversionType", "WSD")
    stream.vr = "OB"
    # The length before the even-length padding: lets readers recover the exact document.
    ds.EncapsulatedDocumentLength = stream.bulk.size


def _write(path: Path, ds: Dataset, meta: FileMetaDataset, streams: list[_Stream]) -> None:
    """Preamble, file meta, then the data set in tag order with the streamed values in place."""
    with path.open("wb") as raw:
        fp = DicomFileLike(raw)
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        raw.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        charset = ds.get("SpecificCharacterSet", "ISO_IR 192")
        bounds = [s.tag for s in streams] + [0x1_0000_0000]
        start = 0
        for i, end in enumerate(bounds):
            chunk = Dataset()
            for elem in ds:
                if start <= elem.tag < end:
                    chunk.add(elem)
            if len(chunk):
                # Later chunks lack SpecificCharacterSet: encode their text with the same one.
                write_dataset(fp, chunk, parent_encoding=charset)
            if i < len(streams):
                _write_stream(raw, streams[i])
            start = end + 1


def _write_stream(raw: BinaryIO, stream: _Stream) -> None:
    tag = struct.pack("<HH", stream.tag >> 16, stream.tag & 0xFFFF)
    size = stream.bulk.size
    with stream.bulk.path.open("rb") as src:
        if stream.encapsulated:
            raw.write(tag + b"OB\x00\x00\xff\xff\xff\xff")
            raw.write(b"\xfe\xff\x00\xe0\x00\x00\x00\x00")  # empty Basic Offset Table
            left = size
            while left > 0:
                n = min(left, _MAX_FRAGMENT)
                padded = n + (n & 1)
                raw.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", padded))
                _copy(src, raw, n)
                if n & 1:
                    raw.write(b"\x00")
                left -= n
            raw.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
        else:
            padded = size + (size & 1)
            if padded > _MAX_FRAGMENT:
                raise BuildError(0xA700, f"bulk value of {size} bytes is too long for one element")
            raw.write(tag + stream.vr.encode() + b"\x00\x00" + struct.pack("<I", padded))
            _copy(src, raw, size)
            if size & 1:
                raw.write(b"\x00")


def _copy(src: BinaryIO, dst: BinaryIO, n: int) -> None:
    """Copy exactly *n* bytes."""
    left = n
    while left:
        data = src.read(min(_COPY_BUF, left))
        if not data:
            raise BuildError(MISSING_BULKDATA, "bulk data part is shorter than announced")
        dst.write(data)
        left -= len(data)
