"""DICOMweb core without a server: frames of implicit VR files, metadata, Accept negotiation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from bench.corpus import make_dataset, write
from node.dicomweb import accept
from node.dicomweb.frames import FrameError, open_frames, parse_frame_list
from node.dicomweb.metadata import instance_metadata
from node.transcode.negotiate import Action

JPEG = "1.2.840.10008.1.2.4.50"
EXPLICIT = "1.2.840.10008.1.2.1"
MPEG2 = "1.2.840.10008.1.2.4.100"


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
        # A stored JPEG decoded to explicit VR little endian (transcoded, not 406).
        (f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}', {JPEG}, "multipart"),
        ("application/dicom+json", {EXPLICIT}, None),
        # A syntax the node neither stores nor writes.
        (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.100',
            {JPEG},
            None,
        ),
        ("application/zip;q=0", {EXPLICIT}, None),
    ],
)
def test_instance_negotiation(header, stored, form):
    if form is None:
        with pytest.raises(accept.NotAcceptable, match="served as stored"):
            accept.choose_instances(header, stored)
    else:
        assert accept.choose_instances(header, stored).form == form


JLS, J2K_LOSSLESS, J2K = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"


def test_instance_syntax_choice_with_q_values():
    dicom = 'multipart/related; type="application/dicom"'
    # The stored syntax wins whenever it is acceptable, whatever its q.
    choice = accept.choose_instances(
        f"{dicom}; transfer-syntax={EXPLICIT}, {dicom}; transfer-syntax={JLS};q=0.2", {JLS}
    )
    assert choice.plan(JLS).action is Action.AS_STORED
    # Else the client's best (by q) that the node writes without loss; a lossy one only when alone.
    header = (
        f"{dicom}; transfer-syntax={J2K};q=1, {dicom}; transfer-syntax={J2K_LOSSLESS};q=0.5, "
        f"{dicom}; transfer-syntax={EXPLICIT};q=0.9"
    )
    assert accept.choose_instances(header, {JLS}).plan(JLS).syntax == EXPLICIT
    assert accept.choose_instances(f"{dicom}; transfer-syntax={J2K}", {JLS}).plan(JLS).syntax == J2K
    # transfer-syntax=* (and no parameter) stay "as stored".
    assert accept.choose_instances(f"{dicom}; transfer-syntax=*", {J2K}).plan(J2K).action is Action.AS_STORED


def test_frame_negotiation():
    assert accept.choose_frames(None, JPEG).content_type == f"image/jpeg; transfer-syntax={JPEG}"
    # OHIF's header: type unquoted, transfer-syntax=*: the stored bitstream, labelled as asked.
    octets = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    choice = accept.choose_frames(octets, JPEG)
    assert (choice.content_type, choice.transcode) == (
        f"application/octet-stream; transfer-syntax={JPEG}",
        False,
    )
    # Native little-endian bytes are the same whatever the VR encoding.
    implicit = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2'
    assert not accept.choose_frames(implicit, EXPLICIT).transcode
    # Decoded when asked for uncompressed bytes; encoded when asked for a bulk data type's default.
    explicit = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT}'
    assert accept.choose_frames(explicit, JLS) == accept.FrameChoice(
        "application/octet-stream", EXPLICIT, True
    )
    assert accept.choose_frames('multipart/related; type="image/jp2"', JLS) == accept.FrameChoice(
        "image/jp2", J2K_LOSSLESS, True
    )
    # image/jpeg means JPEG lossless SV1 (PS3.18 Table 8.7.3-5), which the node does not write.
    with pytest.raises(accept.NotAcceptable):
        accept.choose_frames('multipart/related; type="image/jpeg"', JLS)
    # A syntax that is not of the media type asked.
    with pytest.raises(accept.NotAcceptable):
        accept.choose_frames(f'multipart/related; type="image/jp2"; transfer-syntax={JLS}', EXPLICIT)
