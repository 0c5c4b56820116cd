"""WADO-RS with transcoding, /rendered and /thumbnail, against a real node, through dicomweb-client and httpx.

The corpus is small (32x32 images) but real: JPEG-LS, JPEG 2000 and RLE
written by the codecs the node uses, JPEG baseline (also multi-frame) by
DCMTK's dcmcjpeg; results are compared with pydicom's decoding of the
original files (exactly for lossless sources).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.corpus import encode_as, make_dataset, write
from tests.harness import RunningNode, node_config, split_multipart

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG = "1.2.840.10008.1.2.4.50"
JLS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
RLE = "1.2.840.10008.1.2.5"
MPEG2 = "1.2.840.10008.1.2.4.100"
DICOM = 'multipart/related; type="application/dicom"'


@dataclass
class Corpus:
    study: str = field(default_factory=generate_uid)
    bad_study: str = field(default_factory=generate_uid)
    files: dict[str, Path] = field(default_factory=dict)  # SOP UID -> original file
    series_of: dict[str, str] = field(default_factory=dict)  # SOP UID -> series UID
    by_name: dict[str, str] = field(default_factory=dict)  # name -> SOP UID
    first_series: list[str] = field(default_factory=list)  # SOP UIDs of the first series, in order

    def path(self, name: str) -> str:
        sop = self.by_name[name]
        study = self.bad_study if name == "corrupt" else self.study
        return f"/studies/{study}/series/{self.series_of[sop]}/instances/{sop}"

    def original(self, name: str) -> np.ndarray:
        return dcmread(self.files[self.by_name[name]]).pixel_array


def _eight_bit(ds, *, rgb_frames: int = 0):
    """*ds* turned into 8-bit greyscale, or RGB with *rgb_frames* distinct frames."""
    arr = np.frombuffer(ds.PixelData, "<u2").reshape(32, 32)
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    grey = (arr >> 4).astype(np.uint8)
    if not rgb_frames:
        ds.PixelData = grey.tobytes()
        return ds
    y, x = np.mgrid[0:32, 0:32]
    frames = [
        np.stack([grey, (x * 8 + 40 * n) % 256, (y * 8) % 256], axis=-1).astype(np.uint8)
        for n in range(rgb_frames)
    ]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.NumberOfFrames = rgb_frames
    ds.PixelData = b"".join(f.tobytes() for f in frames)
    return ds


def build(folder: Path) -> Corpus:
    c = Corpus()

    def add(name: str, ds, syntax: str, series: str, study: str | None = None) -> None:
        ds.StudyInstanceUID = study or c.study
        ds.SeriesInstanceUID = series
        path = folder / f"{name}.dcm"
        if syntax == EXPLICIT:
            write(ds, path)
        else:
            encode_as(ds, syntax, path)
        c.files[ds.SOPInstanceUID] = path
        c.series_of[ds.SOPInstanceUID] = series
        c.by_name[name] = ds.SOPInstanceUID

    def ct(n: int, series_number: int, **kw):
        return make_dataset(
            study_uid=c.study,
            series_uid="1.2",
            instance_number=n,
            series_number=series_number,
            phantom=True,
            **kw,
        )

    jls_series = generate_uid()
    for n in (1, 2, 3):
        add(f"jls{n}", ct(n, 1), JLS, jls_series)
        c.first_series.append(c.by_name[f"jls{n}"])
    add("j2k", ct(4, 2), J2K_LOSSLESS, generate_uid())
    add("rle", ct(5, 3), RLE, generate_uid())
    add("jpeg", _eight_bit(ct(6, 4)), JPEG, generate_uid())
    add("jpeg_frames", _eight_bit(ct(7, 5), rgb_frames=3), JPEG, generate_uid())
    add("j2k_lossy", ct(8, 6), J2K, generate_uid())
    mono = generate_uid()
    add("mono2", ct(1, 7), EXPLICIT, mono)  # the same pixels as jls1 (same phantom seed)
    mono1 = ct(1, 7)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    add("mono1", mono1, EXPLICIT, mono)
    add("rgb", _eight_bit(ct(9, 8), rgb_frames=1), EXPLICIT, generate_uid())

    # A JPEG 2000 instance whose codestream header is destroyed (the SIZ segment zeroed).
    add("corrupt", ct(1, 1), J2K_LOSSLESS, generate_uid(), study=c.bad_study)
    path = c.files[c.by_name["corrupt"]]
    data = bytearray(path.read_bytes())
    soc = data.index(b"\xff\x4f\xff\x51")
    data[soc + 2 : soc + 40] = bytes(38)
    path.write_bytes(bytes(data))
    return c


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("wado-transcode")
    corpus = build(root / "corpus")
    node = RunningNode(root / "node", node_config(root / "node")).start()
    try:
        result = node.cli("import", str(root / "corpus"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert node.count("instances") == len(corpus.files)
        yield node, corpus
    finally:
        node.stop()


@pytest.fixture
def http(filled):
    node, _ = filled
    with httpx.Client(base_url=node.url + "/dicom-web", timeout=30) as c:
        yield c


@pytest.fixture
def client(filled) -> DICOMwebClient:
    node, _ = filled
    return DICOMwebClient(url=node.url + "/dicom-web")


def _close(a: np.ndarray, b: np.ndarray, tolerance: int) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= tolerance


# -- instances, series, studies ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tolerance"), [("jls1", 0), ("j2k", 0), ("rle", 0), ("jpeg", 2), ("j2k_lossy", 0)]
)
def test_instance_to_explicit_vr_equals_pydicoms_decoding(client, http, filled, name, tolerance):
    _, c = filled
    sop = c.by_name[name]
    ds = client.retrieve_instance(
        c.study, c.series_of[sop], sop, media_types=(("application/dicom", EXPLICIT),)
    )
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT
    assert _close(ds.pixel_array, c.original(name), tolerance)
    original = dcmread(c.files[sop], stop_before_pixels=True)
    assert ds.PatientName == original.PatientName and ds.SOPInstanceUID == sop
    # Never marked lossless what was lossy: a JPEG source stays "01" with its method.
    if name in ("jpeg", "j2k_lossy"):
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod == ("ISO_10918_1" if name == "jpeg" else "ISO_15444_1")
    else:
        assert "LossyImageCompression" not in ds

    r = http.get(c.path(name), headers={"Accept": f"{DICOM}; transfer-syntax={EXPLICIT}"})
    ((headers, body),) = split_multipart(r)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT}"
    assert "content-length" not in r.headers  # produced while sent


def test_explicit_to_jpeg_ls_and_implicit(http, filled):
    _, c = filled
    for target in (JLS, IMPLICIT, RLE, J2K_LOSSLESS):
        r = http.get(c.path("mono2"), headers={"Accept": f"{DICOM}; transfer-syntax={target}"})
        ((headers, body),) = split_multipart(r)
        assert headers["content-type"] == f"application/dicom; transfer-syntax={target}"
        ds = dcmread(io.BytesIO(body))
        assert ds.file_meta.TransferSyntaxUID == target
        assert np.array_equal(ds.pixel_array, c.original("mono2"))
        assert "LossyImageCompression" not in ds


def test_jpeg_colour_becomes_rgb_after_decoding(http, filled):
    _, c = filled
    r = http.get(c.path("jpeg_frames"), headers={"Accept": f"{DICOM}; transfer-syntax={EXPLICIT}"})
    ((_, body),) = split_multipart(r)
    ds = dcmread(io.BytesIO(body))
    original = dcmread(c.files[c.by_name["jpeg_frames"]])
    assert original.PhotometricInterpretation == "YBR_FULL_422"
    assert (ds.PhotometricInterpretation, ds.PlanarConfiguration, ds.NumberOfFrames) == ("RGB", 0, 3)
    assert (ds.BitsAllocated, ds.BitsStored, ds.SamplesPerPixel) == (8, 8, 3)
    assert _close(ds.pixel_array, original.pixel_array, 2)


def test_series_and_study_with_a_transfer_syntax(client, http, filled):
    _, c = filled
    series = client.retrieve_series(
        c.study, c.series_of[c.first_series[0]], media_types=(("application/dicom", EXPLICIT),)
    )
    assert sorted(ds.SOPInstanceUID for ds in series) == sorted(c.first_series)
    for ds in series:
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT
        assert np.array_equal(ds.pixel_array, dcmread(c.files[ds.SOPInstanceUID]).pixel_array)

    r = http.get(f"/studies/{c.study}", headers={"Accept": f"{DICOM}; transfer-syntax={EXPLICIT}"})
    assert r.status_code == 200
    parts = split_multipart(r)
    assert len(parts) == len(c.files) - 1  # all but the corrupt one, which is another study
    for headers, body in parts:
        assert headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT}"
        ds = dcmread(io.BytesIO(body))
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT

    # A list with q-values: the stored syntax where acceptable (JLS here), else the best lossless one.
    accept = f"{DICOM}; transfer-syntax={JLS}; q=0.5, {DICOM}; transfer-syntax={EXPLICIT}; q=0.9"
    r = http.get(f"/studies/{c.study}", headers={"Accept": accept})
    sent = {
        dcmread(io.BytesIO(b), stop_before_pixels=True).SOPInstanceUID: h["content-type"]
        for h, b in split_multipart(r)
    }
    assert sent[c.by_name["jls1"]].endswith(f"transfer-syntax={JLS}")
    assert sent[c.by_name["j2k"]].endswith(f"transfer-syntax={EXPLICIT}")
    # transfer-syntax=* stays as stored, with a Content-Length.
    r = http.get(f"/studies/{c.study}", headers={"Accept": f"{DICOM}; transfer-syntax=*"})
    assert int(r.headers["content-length"]) == len(r.content)
    assert {h["content-type"].rsplit("=", 1)[1] for h, _ in split_multipart(r)} >= {
        JLS,
        J2K_LOSSLESS,
        RLE,
        JPEG,
    }


def test_lossy_target_only_when_asked_for_exactly(http, filled):
    _, c = filled
    # JPEG 2000 (lossy allowed) first, explicit VR second: the lossless one is sent.
    accept = f"{DICOM}; transfer-syntax={J2K}, {DICOM}; transfer-syntax={EXPLICIT}; q=0.5"
    ((headers, _),) = split_multipart(http.get(c.path("jls1"), headers={"Accept": accept}))
    assert headers["content-type"].endswith(EXPLICIT)
    # Asked for exactly: produced, and marked lossy with its method and ratio.
    ((headers, body),) = split_multipart(
        http.get(c.path("jls1"), headers={"Accept": f"{DICOM}; transfer-syntax={J2K}"})
    )
    assert headers["content-type"].endswith(J2K)
    ds = dcmread(io.BytesIO(body))
    assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", "ISO_15444_1")
    assert float(ds.LossyImageCompressionRatio) > 1
    assert _close(ds.pixel_array, c.original("jls1"), 64)


def test_406_when_the_node_truly_cannot_serve(http, filled):
    _, c = filled
    for accept in (
        f"{DICOM}; transfer-syntax={MPEG2}",
        f"{DICOM}; transfer-syntax={MPEG2}, {DICOM}; transfer-syntax=1.2.3.4",
        "image/png",
    ):
        r = http.get(f"/studies/{c.study}", headers={"Accept": accept})
        assert r.status_code == 406, accept
        assert "cannot satisfy Accept" in r.json()["error"]
    # JPEG baseline holds 8 bits: asked for exactly for a 12-bit CT, 406 naming why.
    r = http.get(c.path("jls1"), headers={"Accept": f"{DICOM}; transfer-syntax={JPEG}"})
    assert r.status_code == 406 and "8-bit" in r.json()["error"]
    # Frames: image/jpeg means JPEG lossless (SV1), which the node does not write.
    r = http.get(c.path("jls1") + "/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert r.status_code == 406
    r = http.get(c.path("jls1") + "/rendered", headers={"Accept": "image/gif"})
    assert r.status_code == 406


# -- frames --------------------------------------------------------------------------


def test_frames_of_a_multiframe_jpeg(client, http, filled):
    _, c = filled
    sop = c.by_name["jpeg_frames"]
    original = dcmread(c.files[sop])
    decoded = client.retrieve_instance_frames(
        c.study,
        c.series_of[sop],
        sop,
        frame_numbers=[3, 1],
        media_types=(("application/octet-stream", EXPLICIT),),
    )
    expected = original.pixel_array
    assert len(decoded) == 2
    for got, n in zip(decoded, (3, 1), strict=True):
        assert _close(np.frombuffer(got, np.uint8).reshape(32, 32, 3), expected[n - 1], 2)
    r = http.get(
        c.path("jpeg_frames") + "/frames/2",
        headers={"Accept": f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT}'},
    )
    ((headers, _),) = split_multipart(r)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={EXPLICIT}"

    # OHIF's request (type unquoted, transfer-syntax=*): the stored JPEG bitstreams.
    ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    r = http.get(c.path("jpeg_frames") + "/frames/1,2,3", headers={"Accept": ohif})
    parts = split_multipart(r)
    assert [h["content-type"] for h, _ in parts] == [f"application/octet-stream; transfer-syntax={JPEG}"] * 3
    assert all(body.startswith(b"\xff\xd8") for _, body in parts)


def test_frames_transcoded_to_a_compressed_type(http, filled):
    _, c = filled
    r = http.get(c.path("rle") + "/frames/1", headers={"Accept": 'multipart/related; type="image/jls"'})
    ((headers, body),) = split_multipart(r)
    assert headers["content-type"] == f"image/jls; transfer-syntax={JLS}"
    from pydicom.pixels import get_decoder

    arr, _ = get_decoder(JLS).as_array(
        b"\xfe\xff\x00\xe0\0\0\0\0\xfe\xff\x00\xe0" + len(body).to_bytes(4, "little") + body,
        rows=32, columns=32, samples_per_pixel=1, bits_allocated=16, bits_stored=12,
        pixel_representation=0, photometric_interpretation="MONOCHROME2", number_of_frames=1,
    )  # fmt: skip
    assert np.array_equal(arr, c.original("rle"))


# -- rendered and thumbnail ----------------------------------------------------------


def _image(r: httpx.Response, media: str = "image/jpeg") -> Image.Image:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    return Image.open(io.BytesIO(r.content))


def test_rendered_jpeg_and_png_with_window_and_viewport(http, filled):
    _, c = filled
    jpeg = _image(http.get(c.path("jls1") + "/rendered"))
    assert (jpeg.format, jpeg.size, jpeg.mode) == ("JPEG", (32, 32), "L")
    png = _image(http.get(c.path("jls1") + "/rendered", headers={"Accept": "image/png"}), "image/png")
    pixels = np.asarray(png)
    assert png.format == "PNG" and pixels.std() > 10  # not blank

    # The data set's window (40/400 after rescale) is the default: asking for it changes nothing.
    same = _image(
        http.get(c.path("jls1") + "/rendered?window=40,400", headers={"Accept": "image/png"}), "image/png"
    )
    assert np.array_equal(np.asarray(same), pixels)
    wide = _image(
        http.get(c.path("jls1") + "/rendered?window=0,4000,linear", headers={"Accept": "image/png"}),
        "image/png",
    )
    assert not np.array_equal(np.asarray(wide), pixels)
    assert np.asarray(wide).std() < pixels.std()  # a wider window flattens contrast
    sigmoid = _image(
        http.get(c.path("jls1") + "/rendered?window=40,400,sigmoid", headers={"Accept": "image/png"}),
        "image/png",
    )
    assert not np.array_equal(np.asarray(sigmoid), pixels)

    small = _image(http.get(c.path("jls1") + "/rendered?viewport=16,8&quality=50"))
    assert small.size == (8, 8)  # aspect kept, fitted to the viewport
    big = _image(http.get(c.path("jls1") + "/frames/1/rendered?viewport=64,64"))
    assert big.size == (64, 64)
    for bad in (
        "window=1",
        "window=40,0",
        "window=40,400,cubic",
        "viewport=0,10",
        "quality=101",
        "viewport=a,b",
    ):
        r = http.get(c.path("jls1") + f"/rendered?{bad}")
        assert r.status_code == 400, bad
        assert bad.split("=")[0] in r.json()["error"]


def test_rendered_monochrome1_is_inverted_and_colour_kept(http, filled):
    _, c = filled
    png = {"Accept": "image/png"}
    m2 = np.asarray(_image(http.get(c.path("mono2") + "/rendered", headers=png), "image/png")).astype(int)
    m1 = np.asarray(_image(http.get(c.path("mono1") + "/rendered", headers=png), "image/png")).astype(int)
    assert np.array_equal(m1, 255 - m2)

    rgb = _image(http.get(c.path("rgb") + "/rendered", headers=png), "image/png")
    assert rgb.mode == "RGB"
    assert np.array_equal(np.asarray(rgb), dcmread(c.files[c.by_name["rgb"]]).pixel_array)
    # Frame-level rendering of a multi-frame colour JPEG: frame 3 differs from frame 1.
    f1 = np.asarray(_image(http.get(c.path("jpeg_frames") + "/frames/1/rendered", headers=png), "image/png"))
    f3 = np.asarray(_image(http.get(c.path("jpeg_frames") + "/frames/3/rendered", headers=png), "image/png"))
    assert f1.shape == (32, 32, 3) and not np.array_equal(f1, f3)
    assert http.get(c.path("jpeg_frames") + "/frames/4/rendered").status_code == 404
    assert http.get(c.path("jpeg_frames") + "/frames/1,2/rendered").status_code == 400


def test_thumbnails_of_study_series_and_instance(http, filled):
    _, c = filled
    png = {"Accept": "image/png"}
    middle = c.first_series[1]  # the middle instance of the first series
    series = c.series_of[middle]
    of_study = _image(http.get(f"/studies/{c.study}/thumbnail", headers=png), "image/png")
    of_series = _image(http.get(f"/studies/{c.study}/series/{series}/thumbnail", headers=png), "image/png")
    of_instance = _image(
        http.get(f"/studies/{c.study}/series/{series}/instances/{middle}/thumbnail", headers=png), "image/png"
    )
    assert of_study.size == of_series.size == of_instance.size == (128, 128)
    assert np.array_equal(np.asarray(of_study), np.asarray(of_instance))
    assert np.array_equal(np.asarray(of_series), np.asarray(of_instance))
    first = _image(http.get(c.path("jls1") + "/thumbnail", headers=png), "image/png")
    assert not np.array_equal(np.asarray(first), np.asarray(of_instance))
    assert _image(http.get(f"/studies/{c.study}/thumbnail?viewport=40,40")).size == (40, 40)
    assert http.get("/studies/1.2.3/thumbnail").status_code == 404


# -- hostile -------------------------------------------------------------------------


def test_corrupt_jpeg2000_gets_a_clear_error_and_the_node_keeps_serving(filled, http):
    node, c = filled
    r = http.get(c.path("corrupt"), headers={"Accept": f"{DICOM}; transfer-syntax={EXPLICIT}"})
    assert r.status_code == 500
    message = r.json()["error"]
    assert c.by_name["corrupt"] in message and "cannot decode" in message
    r = http.get(c.path("corrupt") + "/rendered")
    assert r.status_code == 500 and "cannot decode" in r.json()["error"]
    r = http.get(
        c.path("corrupt") + "/frames/1",
        headers={"Accept": f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT}'},
    )
    assert r.status_code == 500
    # As stored it is still served (the node never needed to decode it).
    r = http.get(c.path("corrupt"), headers={"Accept": f"{DICOM}; transfer-syntax=*"})
    assert r.status_code == 200
    assert node.health()["status"] in ("ok", "degraded")
    assert http.get(c.path("jls1") + "/rendered").status_code == 200
