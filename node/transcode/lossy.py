"""Has an instance lost data?  Read from its header and, where the syntax may go either way, its codestream.

The Lossy Image Compression attributes (PS3.3 C.7.6.1.1.5) travel with an
image for life: once "01", always "01".  A stored JPEG 2000 (4.91) or
JPEG-LS near-lossless (4.81) instance may in fact be lossless; its first
frame's codestream says which (the wavelet of the COD marker, the NEAR
parameter of the scan header).
"""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset

from . import syntaxes as ts


def codestream_is_lossy(frame: bytes, syntax: str) -> bool:
    """For 4.91 / 4.81 / HTJ2K: was this frame coded irreversibly?  (Other syntaxes: by the syntax.)"""
    if syntax in ts.ALWAYS_LOSSY:
        return True
    if syntax == ts.J2K:
        return _j2k_irreversible(frame)
    if syntax == ts.JPEG_LS_NEAR:
        return _jls_near(frame) > 0
    return False


def _j2k_irreversible(frame: bytes) -> bool:
    start = frame.find(b"\xff\x4f\xff\x51")  # SOC SIZ: the codestream (maybe inside a JP2 box)
    if start < 0:
        return True  # not a codestream we can read: assume the worst
    end = frame.find(b"\xff\x90", start)  # first SOT: the main header ends there
    header = frame[start : end if end > 0 else len(frame)]
    cod = header.find(b"\xff\x52")
    if cod < 0 or len(header) < cod + 14:
        return True
    # Lcod(2) Scod(1) SGcod(4) SPcod: levels, xcb, ycb, style, transformation (0 = 9/7 irreversible)
    return header[cod + 13] == 0


def _jls_near(frame: bytes) -> int:
    sos = frame.find(b"\xff\xda")
    if sos < 0 or len(frame) < sos + 5:
        return 1
    (components,) = struct.unpack("B", frame[sos + 4 : sos + 5])
    at = sos + 5 + 2 * components
    return frame[at] if at < len(frame) else 1


def source_is_lossy(ds: Dataset, syntax: str, first_frame: bytes | None) -> bool:
    """Did the stored instance lose data at some point (its header, its syntax or its codestream)?"""
    if str(ds.get("LossyImageCompression", "")).strip() == "01":
        return True
    if syntax in ts.ALWAYS_LOSSY:
        return True
    if syntax in ts.MAYBE_LOSSY and first_frame is not None:
        return codestream_is_lossy(first_frame, syntax)
    return False


def mark(ds: Dataset, *, source_lossy: bool, source_syntax: str, target: str, ratio: float | None) -> None:
    """Set the Lossy Image Compression attributes of the converted header *ds*.

    A lossy target adds its method and approximate ratio (PS3.3: the values
    accumulate, oldest first); a lossless target from a lossy source keeps
    "01" (and names the source's method when the header did not); a
    lossless chain leaves the attributes as they were.
    """
    methods = list(_values(ds, "LossyImageCompressionMethod"))
    ratios = list(_values(ds, "LossyImageCompressionRatio"))
    if source_lossy and not methods and source_syntax in ts.LOSSY_METHOD:
        methods.append(ts.LOSSY_METHOD[source_syntax])
    if target in ts.LOSSY_TARGETS:
        methods.append(ts.LOSSY_METHOD[target])
        # Ratios pair with methods; when an earlier ratio is unknown, a new one would pair wrongly.
        if ratio and len(ratios) == len(methods) - 1:
            ratios.append(f"{ratio:.2f}")
    elif not source_lossy:
        return
    ds.LossyImageCompression = "01"
    if methods:
        ds.LossyImageCompressionMethod = methods if len(methods) > 1 else methods[0]
    if ratios:
        ds.LossyImageCompressionRatio = ratios if len(ratios) > 1 else ratios[0]


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [str(value)]
    return [str(v) for v in value]
