"""A stored instance is a whole data set: truncated and overrunning data sets are refused.

Over C-STORE (pynetdicom sending the file's bytes as they are) and STOW-RS
(httpx); the element walk itself over pydicom's own test files.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE, _config

from bench.corpus import make_dataset, write
from node import integrity
from node.part10 import header_bytes
from tests.harness import NODE_AE, RunningNode, dataset_bytes, node_config
from tests.test_stow import content_type, dicom_parts, failed_items, multipart, post


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> RunningNode:
    root = tmp_path_factory.mktemp("wholeness")
    n = RunningNode(root, node_config(root)).start()
    yield n
    n.stop()


def send_raw(node: RunningNode, path: Path):
    """C-STORE the file's data set bytes exactly as they are (as a broken device would)."""
    meta = read_file_meta_info(path)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE)
    assert assoc.is_established
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()


def element_offset(data: bytes, tag: int) -> int:
    """File offset of the (explicit VR little endian, top-level) element *tag*."""
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    at = data.index(needle, 132 + 12)
    return at


def broken_files(folder: Path) -> dict[str, Path]:
    """The issue's cases, each a Part-10 file that is not a whole data set."""
    folder.mkdir(parents=True, exist_ok=True)

    def fresh(**kw) -> bytes:
        ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), **kw)
        return write(ds, folder / f"src-{generate_uid()}.dcm").read_bytes()

    cases: dict[str, bytes] = {}
    data = fresh()
    at = element_offset(data, 0x00280004)  # PhotometricInterpretation, CS "MONOCHROME2"
    cases["cut inside (0028,0004)"] = data[: at + 8 + 5]
    data = fresh()
    cases["pixel data 40 bytes short"] = data[:-40]
    data = bytearray(fresh())
    at = element_offset(bytes(data), 0x00280004)
    struct.pack_into("<H", data, at + 6, 0xFFFF)
    cases["(0028,0004) length 0xFFFF past the end"] = bytes(data)
    data = bytearray(fresh())
    at = element_offset(bytes(data), 0x7FE00010)
    struct.pack_into("<I", data, at + 8, 0xFFFFFFF0)
    cases["pixel data declares 0xFFFFFFF0 bytes"] = bytes(data[: at + 12 + 128])
    # Encapsulated pixel data without its sequence delimiter.
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\0" * 300 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    data = write(ds, folder / "jpeg.dcm").read_bytes()
    cases["encapsulated, no delimiter"] = data[:-8]
    # A deflated data set whose deflate stream is cut short.
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = write(ds, folder / "deflated.dcm").read_bytes()
    cases["deflated, stream cut"] = data[: len(data) - len(dataset_bytes(folder / "deflated.dcm")) // 2]
    out = {}
    for n, (name, content) in enumerate(cases.items()):
        path = folder / f"case{n}.dcm"
        path.write_bytes(content)
        out[name] = path
    return out


def test_truncated_data_sets_over_c_store_are_refused_and_nothing_kept(node, tmp_path):
    before = node.count()
    for name, path in broken_files(tmp_path / "c").items():
        sop = read_file_meta_info(path).MediaStorageSOPInstanceUID
        status = send_raw(node, path)
        assert status.Status == 0xC000, (name, status)
        comment = str(status.ErrorComment)
        assert "truncated" in comment or "malformed" in comment, (name, comment)
        assert not list(node.storage.rglob(f"{sop}.dcm")), name
    assert node.count() == before
    assert not list((node.storage / ".tmp").iterdir())
    assert node.cli("check").returncode == 0


def test_truncated_data_sets_over_stow_are_refused_and_nothing_kept(node, tmp_path):
    files = broken_files(tmp_path / "s")
    good = write(make_dataset(study_uid=generate_uid(), series_uid=generate_uid()), tmp_path / "good.dcm")
    before = node.count()
    r = post(node, multipart(dicom_parts([*files.values(), good])), content_type())
    assert r.status_code == 202, r.text  # the whole one is stored, every broken one refused
    failed = failed_items(r.json())
    assert len(failed) == len(files)
    for item in failed:
        assert item["00081197"]["Value"] == [0xC000]
        assert "truncated" in item["00000902"]["Value"][0] or "malformed" in item["00000902"]["Value"][0]
    assert node.count() == before + 1
    assert not list((node.storage / ".tmp").iterdir())
    # One broken part alone: 409, nothing stored.
    r = post(node, multipart(dicom_parts([files["pixel data declares 0xFFFFFFF0 bytes"]])), content_type())
    assert r.status_code == 409
    assert "(7FE0,0010) declares 4294967280 bytes" in failed_items(r.json())[0]["00000902"]["Value"][0]
    assert node.count() == before + 1


def test_whole_files_of_every_encoding_pass_and_cut_ones_do_not(tmp_path, monkeypatch):
    """The walk over pydicom's test files: implicit / explicit / big endian, deflated, encapsulated."""
    whole = [
        "CT_small.dcm",  # explicit VR little endian
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "image_dfl.dcm",  # deflated (with a 8-byte trailer after the stream)
        "JPEG2000.dcm",  # encapsulated
        "SC_rgb_rle.dcm",
        "rtplan.dcm",  # nested sequences
    ]
    for name in whole:
        meta = integrity.check(Path(get_testdata_file(name)))
        assert meta.transfer_syntax, name
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        with pytest.raises(integrity.Incomplete, match="truncated"):
            integrity.check(Path(get_testdata_file(name)))
    # Trailing garbage after the data set: an overrun.
    src = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "tail.dcm").write_bytes(src + b"\x10\x00\x10\x00PN\x40\x00abc")
    with pytest.raises(integrity.Incomplete, match="declares 64 bytes"):
        integrity.check(tmp_path / "tail.dcm")
    # A deflate bomb is refused before anything inflates it whole (the bound made small, to be quick).
    monkeypatch.setattr(integrity, "MAX_INFLATED", 4 << 20)
    head = header_bytes("1.2.840.10008.5.1.4.1.1.2", generate_uid(), DeflatedExplicitVRLittleEndian)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(bomb.compress(b"\0" * (1 << 20)) for _ in range(16)) + bomb.flush()
    (tmp_path / "bomb.dcm").write_bytes(head + body)
    with pytest.raises(integrity.Incomplete, match="inflates to more than"):
        integrity.check(tmp_path / "bomb.dcm")
