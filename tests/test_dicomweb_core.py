"""DICOMweb core without a server: frames of implicit VR files, metadata, Accept negotiation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from bench.corpus import make_dataset, write
from node.dicomweb import accept
from node.dicomweb.frames import FrameError, open_frames, parse_frame_list
from node.dicomweb.metadata import instance_metadata

JPEG = "1.2.840.10008.1.2.4.50"
EXPLICIT = "1.2.840.10008.1.2.1"


def test_frames_and_metadata_of_an_implicit_vr_file(tmp_path: Path):
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    frames = [b"\x01" * 2048, b"\x02" * 2048]
    ds.NumberOfFrames = 2
    ds.PixelData = b"".join(frames)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = write(ds, tmp_path / "implicit.dcm")

    reader = open_frames(path.open("rb"))
    assert (reader.count, reader.frame_size) == (2, 2048)
    assert list(reader.frames([2, 1])) == [frames[1], frames[0]]
    with pytest.raises(FrameError, match="2 frame"):
        open_frames(path.open("rb")).check([3])

    meta = instance_metadata(path.open("rb"), "http://h/bulk")
    assert meta["7FE00010"] == {"vr": "OW", "BulkDataURI": "http://h/bulk/7FE00010"}
    assert meta["00280010"] == {"vr": "US", "Value": [32]}


def test_frame_lists():
    assert parse_frame_list("3,1,2") == [3, 1, 2]
    for bad in ("", "0", "1,x", "-1"):
        with pytest.raises(FrameError):
            parse_frame_list(bad)


@pytest.mark.parametrize(
    ("header", "stored", "form"),
    [
        (None, {JPEG, EXPLICIT}, "multipart"),
        ("*/*", {JPEG}, "multipart"),
        ('multipart/related; type="application/dicom"', {JPEG}, "multipart"),
        (f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}', {JPEG}, "multipart"),
        # One range per stored syntax admits both.
        (
            f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}, '
            f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}',
            {JPEG, EXPLICIT},
            "multipart",
        ),
        ("application/zip", {JPEG}, "zip"),
        ('application/zip;q=0.5, multipart/related; type="application/dicom"', {JPEG}, "multipart"),
        ('multipart/related; type="application/dicom";q=0.5, application/zip', {JPEG}, "zip"),
        (f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}', {JPEG}, None),
        ("application/dicom+json", {EXPLICIT}, None),
        ("application/zip;q=0", {EXPLICIT}, None),
    ],
)
def test_instance_negotiation(header, stored, form):
    if form is None:
        with pytest.raises(accept.NotAcceptable, match="served as stored"):
            accept.choose_instances(header, stored)
    else:
        assert accept.choose_instances(header, stored) == form


def test_frame_negotiation():
    assert accept.choose_frames(None, JPEG) == f"image/jpeg; transfer-syntax={JPEG}"
    octets = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    assert accept.choose_frames(octets, JPEG) == f"application/octet-stream; transfer-syntax={JPEG}"
    # Native little-endian bytes are the same whatever the VR encoding.
    implicit = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2'
    assert accept.choose_frames(implicit, EXPLICIT).startswith("application/octet-stream")
    with pytest.raises(accept.NotAcceptable):
        accept.choose_frames('multipart/related; type="image/jp2"', JPEG)
