"""The JPEG header reader of the instance builder, on hand-made headers of each JPEG process."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from node.dicomweb.encapsulate import BuildError, jpeg_info


def jpeg_header(
    sof: int, precision: int, rows: int, cols: int, comps: list[tuple[int, int]], predictor=1
) -> bytes:
    """SOI, an APP0, a SOFn with *comps* (id, sampling), and an SOS (with its selection value)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    frame = struct.pack(">BHHB", precision, rows, cols, len(comps))
    frame += b"".join(bytes([cid, sampling, 0]) for cid, sampling in comps)
    sofseg = bytes([0xFF, sof]) + struct.pack(">H", len(frame) + 2) + frame
    scan = bytes([len(comps)]) + b"".join(bytes([cid, 0]) for cid, _ in comps) + bytes([predictor, 0, 0])
    sos = b"\xff\xda" + struct.pack(">H", len(scan) + 2) + scan
    return b"\xff\xd8" + app0 + sofseg + sos + b"\x00" * 16 + b"\xff\xd9"


@pytest.mark.parametrize(
    ("sof", "precision", "comps", "predictor", "syntax", "photometric"),
    [
        (0xC0, 8, [(1, 0x22), (2, 0x11), (3, 0x11)], 0, "1.2.840.10008.1.2.4.50", "YBR_FULL_422"),
        (0xC0, 8, [(1, 0x11), (2, 0x11), (3, 0x11)], 0, "1.2.840.10008.1.2.4.50", "YBR_FULL"),
        (0xC0, 8, [(ord("R"), 0x11), (ord("G"), 0x11), (ord("B"), 0x11)], 0, "1.2.840.10008.1.2.4.50", "RGB"),
        (0xC1, 12, [(1, 0x11)], 0, "1.2.840.10008.1.2.4.51", "MONOCHROME2"),
        (0xC2, 8, [(1, 0x11)], 0, "1.2.840.10008.1.2.4.55", "MONOCHROME2"),
        (0xC3, 16, [(1, 0x11)], 1, "1.2.840.10008.1.2.4.70", "MONOCHROME2"),
        (0xC3, 16, [(1, 0x11)], 6, "1.2.840.10008.1.2.4.57", "MONOCHROME2"),
    ],
)
def test_jpeg_processes(tmp_path: Path, sof, precision, comps, predictor, syntax, photometric):
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg_header(sof, precision, 300, 200, comps, predictor))
    info = jpeg_info(path)
    assert (info.rows, info.columns, info.precision) == (300, 200, precision)
    assert (info.transfer_syntax, info.photometric, info.components) == (syntax, photometric, len(comps))


def test_unsupported_and_broken_jpegs(tmp_path: Path):
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg_header(0xC9, 8, 10, 10, [(1, 0x11)]))  # arithmetic coding
    with pytest.raises(BuildError, match="arithmetic"):
        jpeg_info(path)
    path.write_bytes(jpeg_header(0xC0, 8, 10, 10, [(1, 0x11)])[:30])
    with pytest.raises(BuildError, match="ends inside its header"):
        jpeg_info(path)
    path.write_bytes(b"GIF89a")
    with pytest.raises(BuildError, match="not a JPEG"):
        jpeg_info(path)
