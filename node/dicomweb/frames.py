"""Single frames of stored pixel data, read without decoding.

Native pixel data: frame *n* is the byte range ``(n-1)*size .. n*size`` of
the value, with size = Rows x Columns x SamplesPerPixel x BitsAllocated/8;
only that range is read.  Encapsulated pixel data: pydicom's ``get_frame``
walks the fragment items (using the Basic or Extended Offset Table when
present) by seeking, so only the frame's own fragments are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from .pixels import DEFLATED, UNDEFINED, read_header


class FrameError(ValueError):
    """The frames asked for cannot be served; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_frame_list(text: str) -> list[int]:
    """``"1,3,2"`` -> [1, 3, 2]; frame numbers start at 1."""
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise FrameError(f"frame list {text!r}: expected comma-separated numbers from 1") from None
    if not numbers or any(n < 1 for n in numbers):
        raise FrameError(f"frame list {text!r}: expected comma-separated numbers from 1")
    return numbers


@dataclass
class FrameReader:
    """Reads frames of one open instance file."""

    fp: BinaryIO
    syntax: str
    count: int
    offset: int
    frame_size: int  # native only
    encapsulated: bool
    extended_offsets: tuple[bytes, bytes] | None = None
    header: Dataset | None = None  # the data set up to the pixel data (pixel module for decoding)
    pixel_vr: str = "OW"

    def frame(self, number: int) -> bytes:
        """Frame *number* (from 1), as stored."""
        if self.encapsulated:
            self.fp.seek(self.offset)
            return get_frame(
                self.fp, number - 1, number_of_frames=self.count, extended_offsets=self.extended_offsets
            )
        self.fp.seek(self.offset + (number - 1) * self.frame_size)
        data = self.fp.read(self.frame_size)
        if len(data) != self.frame_size:
            raise FrameError(f"frame {number}: pixel data is shorter than its header says", 500)
        return data

    def frames(self, numbers: list[int]) -> Iterator[bytes]:
        """The frames *numbers*, in the order asked; closes the file at the end."""
        with self.fp:
            for n in numbers:
                yield self.frame(n)

    def check(self, numbers: list[int]) -> None:
        """Raise FrameError (404) for a frame number past the last frame."""
        beyond = [n for n in numbers if n > self.count]
        if beyond:
            raise FrameError(f"frame {beyond[0]} does not exist: the instance has {self.count} frame(s)", 404)


def open_frames(fp: BinaryIO) -> FrameReader:
    """Locate the pixel data of the instance in *fp* (which the reader then owns)."""
    try:
        ds, pixel = read_header(fp)
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        if syntax == DEFLATED:
            raise FrameError("frames of a deflated instance cannot be read without inflating it", 406)
        if pixel is None:
            raise FrameError("the instance has no pixel data", 404)
        count = int(ds.get("NumberOfFrames") or 1)
        if pixel.length == UNDEFINED:
            ext = None
            if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
                ext = (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
            return FrameReader(fp, syntax, count, pixel.offset, 0, True, ext, ds, pixel.vr)
        # Big endian frames are served as stored (labelled so) or decoded by node.transcode.
        bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)
        if bits % 8:
            raise FrameError("frames of this bit-packed pixel data do not start on byte boundaries", 406)
        if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
            bits = bits // 3 * 2  # two chroma samples for every two pixels (PS3.3 C.7.6.3.1.2)
        return FrameReader(fp, syntax, count, pixel.offset, bits // 8, False, None, ds, pixel.vr)
    except BaseException:
        fp.close()
        raise
