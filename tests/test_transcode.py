"""node.transcode without a server: the negotiation rules, every stored syntax to every lossless
target (pixels equal pydicom's decoding of the original), the Part-10 result, and memory bounded
by a frame on a 500-frame instance."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import generate_uid

from bench.corpus import encode_as, make_dataset, write
from node.store import InstanceStore
from node.transcode import TranscodeError, convert_for_storage, transcode, transcode_file, transcode_to_temp
from node.transcode import syntaxes as ts
from node.transcode.negotiate import ANY, Action, acceptor_syntax, plan, requestor_syntaxes
from tests.harness import REPO

MPEG2 = "1.2.840.10008.1.2.4.100"

# -- negotiation rules -----------------------------------------------------------------


def test_plan_prefers_the_stored_syntax_then_the_peers_lossless_preference():
    assert plan(ts.JPEG_LS_LOSSLESS, [ts.EXPLICIT, ts.JPEG_LS_LOSSLESS]).action is Action.AS_STORED
    assert plan(ts.J2K_LOSSLESS, [ANY]).action is Action.AS_STORED
    # The peer's order among what the node writes losslessly (not the node's order).
    p = plan(ts.J2K_LOSSLESS, [ts.JPEG_LS_LOSSLESS, ts.EXPLICIT, ts.IMPLICIT])
    assert (p.action, p.syntax, p.lossy) == (Action.TRANSCODE, ts.JPEG_LS_LOSSLESS, False)
    # A lossy syntax first in the list is passed over while a lossless one is acceptable ...
    assert plan(ts.JPEG_LS_LOSSLESS, [ts.JPEG_BASELINE, ts.EXPLICIT]).syntax == ts.EXPLICIT
    # ... and chosen when it is all the peer takes (asked for exactly).
    p = plan(ts.JPEG_LS_LOSSLESS, [ts.J2K])
    assert (p.action, p.syntax, p.lossy) == (Action.TRANSCODE, ts.J2K, True)
    # A lossy stored instance decodes to a lossless target: no further loss.
    assert plan(ts.JPEG_BASELINE, [ts.EXPLICIT]).syntax == ts.EXPLICIT
    # JPEG lossless SV1 is read, not written; MPEG-2 neither.
    assert plan(ts.EXPLICIT, [ts.JPEG_LOSSLESS_SV1]).action is Action.CANNOT
    p = plan(MPEG2, [ts.EXPLICIT, ts.IMPLICIT])
    assert p.action is Action.CANNOT and "cannot decode" in p.reason
    assert plan(ts.RLE, []).action is Action.CANNOT


def test_requestor_proposes_stored_explicit_and_implicit_in_separate_contexts():
    assert requestor_syntaxes(ts.JPEG_LS_LOSSLESS) == [ts.JPEG_LS_LOSSLESS, ts.EXPLICIT, ts.IMPLICIT]
    assert requestor_syntaxes(ts.EXPLICIT) == [ts.EXPLICIT, ts.IMPLICIT]
    assert requestor_syntaxes(ts.IMPLICIT) == [ts.IMPLICIT, ts.EXPLICIT]


def test_acceptor_choice_for_one_storage_context():
    def getscu(preferred: str) -> list[str]:  # DCMTK getscu +x?: one context per SOP class
        return [preferred, ts.EXPLICIT, ts.BIG_ENDIAN, ts.IMPLICIT]

    # +xs (JPEG lossless SV1): the node cannot write it for instances stored otherwise.
    assert acceptor_syntax(getscu(ts.JPEG_LOSSLESS_SV1)) == ts.EXPLICIT
    assert acceptor_syntax(getscu(ts.JPEG_LOSSLESS_SV1), {ts.JPEG_LOSSLESS_SV1}) == ts.JPEG_LOSSLESS_SV1
    assert acceptor_syntax(getscu(ts.JPEG_LOSSLESS_SV1), {ts.JPEG_LOSSLESS_SV1, ts.RLE}) == ts.EXPLICIT
    # +xv (JPEG 2000 lossless) and +xr (RLE): the peer's preference, written when not stored so.
    assert acceptor_syntax(getscu(ts.J2K_LOSSLESS)) == ts.J2K_LOSSLESS
    assert acceptor_syntax(getscu(ts.RLE), {ts.JPEG_LS_LOSSLESS}) == ts.RLE
    # The stored syntax, offered second, beats the peer's first choice.
    assert acceptor_syntax([ts.EXPLICIT, ts.JPEG_LS_LOSSLESS], {ts.JPEG_LS_LOSSLESS}) == ts.JPEG_LS_LOSSLESS
    # +xy (JPEG baseline, lossy): not while explicit VR is offered; alone, it is asked for exactly.
    assert acceptor_syntax(getscu(ts.JPEG_BASELINE)) == ts.EXPLICIT
    assert acceptor_syntax(getscu(ts.JPEG_BASELINE), {ts.JPEG_BASELINE}) == ts.JPEG_BASELINE
    assert acceptor_syntax([ts.JPEG_BASELINE]) == ts.JPEG_BASELINE
    assert acceptor_syntax([MPEG2]) is None


# -- conversions -----------------------------------------------------------------------

SOURCES = [
    ts.EXPLICIT,
    ts.IMPLICIT,
    ts.DEFLATED,
    ts.BIG_ENDIAN,
    ts.JPEG_LS_LOSSLESS,
    ts.JPEG_LS_NEAR,
    ts.J2K_LOSSLESS,
    ts.J2K,
    ts.RLE,
    ts.JPEG_LOSSLESS_SV1,
    ts.JPEG_EXTENDED,
]
LOSSY_SOURCES = {ts.JPEG_LS_NEAR, ts.J2K, ts.JPEG_EXTENDED}


def _ct(**kw):
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), phantom=True, **kw)
    ds.PatientName = "Иванов^Иван"
    ds.SpecificCharacterSet = "ISO_IR 144"
    return ds


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> tuple[InstanceStore, dict[str, str]]:
    root = tmp_path_factory.mktemp("transcode")
    store = InstanceStore(root, fsync=False)
    files = {}
    for syntax in SOURCES:
        ds = _ct()
        ds.DataSetTrailingPadding = b"\0" * 6  # an element after the pixel data
        encode_as(ds, syntax, root / f"{syntax}.dcm")
        files[syntax] = f"{syntax}.dcm"
    return store, files


@pytest.mark.parametrize("source", SOURCES)
def test_every_stored_syntax_to_every_lossless_target(stored, source):
    store, files = stored
    original = dcmread(store.absolute(files[source]))
    reference = original.pixel_array
    for target in ts.LOSSLESS_TARGETS:
        path = transcode_to_temp(store, files[source], source, target)
        try:
            ds = dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == target
            assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
            assert np.array_equal(ds.pixel_array, reference), (source, target)
            # Non-pixel elements as stored, the trailing one included.
            assert ds.PatientName == "Иванов^Иван" and ds.StudyDate == original.StudyDate
            assert (ds.BitsStored, ds.HighBit, ds.PhotometricInterpretation) == (12, 11, "MONOCHROME2")
            assert "DataSetTrailingPadding" in ds
            if source in LOSSY_SOURCES:
                assert ds.LossyImageCompression == "01", (source, target)
            else:
                assert "LossyImageCompression" not in ds, (source, target)
        finally:
            path.unlink()
    assert not list(store.tmp.iterdir())  # every temp file was the caller's, and is gone


def test_multiframe_output_has_its_offset_table_and_streams_the_same_bytes(tmp_path: Path):
    store = InstanceStore(tmp_path, fsync=False)
    ds = _ct()
    frames = [np.frombuffer(ds.PixelData, "<u2") + n for n in range(3)]
    ds.NumberOfFrames = 3
    ds.PixelData = b"".join(f.astype("<u2").tobytes() for f in frames)
    write(ds, tmp_path / "mf.dcm")
    path = transcode_to_temp(store, "mf.dcm", ts.EXPLICIT, ts.JPEG_LS_LOSSLESS)
    out = dcmread(path)
    value = out.PixelData
    (bot_length,) = struct.unpack("<I", value[4:8])
    offsets = struct.unpack("<3I", value[8:20])
    assert bot_length == 12 and offsets[0] == 0 and offsets[1] < offsets[2]
    assert np.array_equal(out.pixel_array, dcmread(tmp_path / "mf.dcm").pixel_array)
    # The streamed form (WADO-RS) differs only by its empty offset table.
    streamed = dcmread(
        __import__("io").BytesIO(b"".join(transcode(store, "mf.dcm", ts.EXPLICIT, ts.JPEG_LS_LOSSLESS)))
    )
    assert np.array_equal(streamed.pixel_array, out.pixel_array)


def test_lossy_marks_accumulate_and_lossless_near_is_not_marked(tmp_path: Path):
    store = InstanceStore(tmp_path, fsync=False)
    ds = _ct()
    arr = ds.pixel_array
    # JPEG-LS near-lossless syntax with NEAR=0 is lossless: the codestream says so.
    data = get_encoder(ts.JPEG_LS_NEAR).encode(arr, jls_error=0, **_options(ds))
    exact = ds.copy()
    exact.PixelData = encapsulate([data])
    exact["PixelData"].VR = "OB"
    exact.file_meta.TransferSyntaxUID = ts.JPEG_LS_NEAR
    write(exact, tmp_path / "near0.dcm")
    out = dcmread(transcode_to_temp(store, "near0.dcm", ts.JPEG_LS_NEAR, ts.EXPLICIT))
    assert "LossyImageCompression" not in out and np.array_equal(out.pixel_array, arr)
    # A lossy source sent to a lossy target: both methods, oldest first.
    encode_as(_ct(), ts.JPEG_LS_NEAR, tmp_path / "near2.dcm")
    out = dcmread(transcode_to_temp(store, "near2.dcm", ts.JPEG_LS_NEAR, ts.J2K))
    assert out.LossyImageCompression == "01"
    assert list(out.LossyImageCompressionMethod) == ["ISO_14495_1", "ISO_15444_1"]


def _options(ds):
    from pydicom.pixels import as_pixel_options

    return as_pixel_options(ds)


def test_unconvertible_instances_name_the_instance_and_the_reason(tmp_path: Path):
    store = InstanceStore(tmp_path, fsync=False)
    ds = _ct()
    encode_as(ds, ts.J2K_LOSSLESS, tmp_path / "bad.dcm")
    raw = bytearray((tmp_path / "bad.dcm").read_bytes())
    soc = raw.index(b"\xff\x4f\xff\x51")
    raw[soc + 2 : soc + 30] = bytes(28)
    (tmp_path / "bad.dcm").write_bytes(bytes(raw))
    with pytest.raises(TranscodeError, match=r"instance bad.dcm: .*frame 1: cannot decode") as info:
        transcode_to_temp(store, "bad.dcm", ts.J2K_LOSSLESS, ts.EXPLICIT)
    assert info.value.corrupt
    write(_ct(), tmp_path / "ct.dcm")
    with pytest.raises(TranscodeError, match="JPEG baseline holds 8-bit samples") as info:
        transcode_to_temp(store, "ct.dcm", ts.EXPLICIT, ts.JPEG_BASELINE)
    assert not info.value.corrupt
    with pytest.raises(TranscodeError, match="does not write that transfer syntax"):
        transcode_to_temp(store, "bad.dcm", ts.J2K_LOSSLESS, ts.JPEG_LOSSLESS_SV1)
    with pytest.raises(TranscodeError, match="cannot decode the stored transfer syntax"):
        transcode_to_temp(store, "bad.dcm", MPEG2, ts.EXPLICIT)
    assert not list(store.tmp.iterdir())


def test_ingest_conversion_of_a_received_file(tmp_path: Path):
    received = encode_as(_ct(), ts.RLE, tmp_path / "received.dcm")
    out = convert_for_storage(received, ts.RLE, ts.JPEG_LS_LOSSLESS, tmp_path)
    assert out is not None and out.parent == tmp_path and out != received and received.exists()
    assert np.array_equal(dcmread(out).pixel_array, dcmread(received).pixel_array)
    assert transcode_file(received, ts.RLE, ts.EXPLICIT, tmp_path).exists()
    # Stored as received: nothing configured, already there, or nothing to compress.
    assert convert_for_storage(received, ts.RLE, "", tmp_path) is None
    assert convert_for_storage(received, ts.RLE, ts.RLE, tmp_path) is None
    report = _ct()
    del report.PixelData
    assert convert_for_storage(write(report, tmp_path / "sr.dcm"), ts.EXPLICIT, ts.RLE, tmp_path) is None
    assert convert_for_storage(received, MPEG2, ts.EXPLICIT, tmp_path) is None


def test_500_frame_instance_is_converted_within_a_frame_of_memory(tmp_path: Path):
    """Peak RSS of a process converting a 500-frame JPEG-LS instance (64 MB decoded) to explicit VR."""
    side, count = 256, 500
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), phantom=True)
    from bench.corpus import phantom_pixels

    ds.Rows = ds.Columns = side
    arr = np.frombuffer(phantom_pixels(side, 1), "<u2").reshape(side, side)
    frame = get_encoder(ts.JPEG_LS_LOSSLESS).encode(arr, **_options(ds))
    ds.NumberOfFrames = count
    ds.PixelData = encapsulate([frame] * count)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts.JPEG_LS_LOSSLESS
    big = write(ds, tmp_path / "big.dcm")
    small = encode_as(_ct(), ts.JPEG_LS_LOSSLESS, tmp_path / "small.dcm")
    script = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from node.transcode import transcode_file
        out = Path({str(tmp_path)!r})
        transcode_file(Path({str(small)!r}), "{ts.JPEG_LS_LOSSLESS}", "{ts.EXPLICIT}", out)  # codecs loaded
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        transcode_file(Path({str(big)!r}), "{ts.JPEG_LS_LOSSLESS}", "{ts.EXPLICIT}", out)
        print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    before, after = (int(v) for v in result.stdout.split())
    decoded_mb = side * side * 2 * count / 2**20
    growth_mb = (after - before) / 1024
    print(f"peak RSS grew {growth_mb:.1f} MB for {decoded_mb:.0f} MB of decoded pixels")
    assert growth_mb < 12, f"peak RSS grew {growth_mb:.1f} MB converting {decoded_mb:.0f} MB of pixels"
    (converted,) = [p for p in tmp_path.glob("*.part") if p.stat().st_size > 2**20]
    out = dcmread(converted, stop_before_pixels=True)
    assert out.NumberOfFrames == count and converted.stat().st_size > side * side * 2 * count
