"""The foundation: echo, C-STORE into the index and the store, ACL, restart, stop."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from bench.corpus import make_dataset, write, write_corpus
from tests import harness
from tests.harness import NODE_AE, dataset_bytes, dcmtk
from tests.rawdimse import CT_IMAGE_STORAGE, EXPLICIT_VR_LE, RawPeer, p_data, pdu, store_rq


def storescu(node, *paths: Path, aet: str = "STORESCU", check: bool = True):
    return harness.storescu(node.ae_title, node.dicom_port, *paths, aet=aet, check=check)


def stored_path(node, sop_uid: str) -> Path:
    matches = list(node.storage.rglob(f"{sop_uid}.dcm"))
    assert len(matches) == 1, f"{sop_uid}: {matches}"
    return matches[0]


def index_rows(node, sql: str, *args) -> list[tuple]:
    return node.index_rows(sql, *args)


def send_with_pynetdicom(node, ds, *, aet: str = "PYSCU"):
    return harness.c_store(node.ae_title, node.dicom_port, ds, aet=aet)


def test_echoscu(node):
    result = dcmtk("echoscu", "-v", "-aet", "ME", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port))
    assert "Received Echo Response (Success)" in result.stderr + result.stdout
    assert "association ME from 127.0.0.1" in node.log()


def test_storescu_folder_is_indexed_byte_identical_and_survives_restart(node, tmp_path):
    sent = write_corpus(tmp_path / "corpus", studies=2, series=2, instances=50, size="tiny")
    assert len(sent) == 200
    storescu(node, tmp_path / "corpus")

    counts = node.health()["counts"]
    assert counts == {"patients": 2, "studies": 2, "series": 4, "instances": 200}
    for path in sent:
        sop_uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(stored_path(node, sop_uid)) == dataset_bytes(path)
    assert "200 stored" in node.log()

    node.restart()
    assert node.health()["counts"] == counts
    assert node.cli("check").returncode == 0


def test_rejected_calling_ae(node_factory):
    node = node_factory(dicom={"allowed_calling_aets": ["GOODSCU"]}).start()
    bad = dcmtk("echoscu", "-aet", "BADSCU", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port), check=False)
    assert bad.returncode != 0
    assert "Association Rejected" in bad.stderr + bad.stdout
    good = dcmtk(
        "echoscu", "-aet", "GOODSCU", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port), check=False
    )
    assert good.returncode == 0
    assert "BADSCU" in node.log() and "rejected" in node.log()


def test_corrupt_dataset_fails_and_changes_nothing(node, tmp_path):
    good = write(make_dataset(study_uid=generate_uid(), series_uid=generate_uid()), tmp_path / "ok.dcm")
    storescu(node, good)
    assert node.count() == 1

    # Valid file meta, garbage data set: sent as raw bytes, exactly as a broken device would.
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    path = write(ds, tmp_path / "garbage.dcm")
    raw = path.read_bytes()
    meta_end = len(raw) - len(dataset_bytes(path))
    path.write_bytes(raw[:meta_end] + b"\xff" * 300)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE)
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()
    assert status.Status in (0xA900, 0xC000)
    # The element walk (node/integrity.py) sees first that these bytes are no data set.
    assert "SOPInstanceUID" in status.ErrorComment or "data set malformed" in status.ErrorComment

    # A data set without StudyInstanceUID: refused, naming the attribute.
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    del ds.StudyInstanceUID
    status = send_with_pynetdicom(node, ds)
    assert status.Status == 0xA900
    assert "StudyInstanceUID" in status.ErrorComment

    # A UID that would be a path trick never reaches the file system.
    ds = make_dataset(study_uid="../../etc", series_uid=generate_uid())
    status = send_with_pynetdicom(node, ds)
    assert status.Status == 0xA900
    assert "not a valid UID" in status.ErrorComment

    assert node.count() == 1
    assert not any((node.storage / ".tmp").iterdir())
    assert dcmtk("echoscu", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port)).returncode == 0


def test_same_instance_twice_is_one_row(node, tmp_path):
    path = write(make_dataset(study_uid=generate_uid(), series_uid=generate_uid()), tmp_path / "a.dcm")
    storescu(node, path)
    storescu(node, path)
    assert node.count() == 1
    assert "1 replaced" in node.log()


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO_IR 144", "Иванов^Иван"), ("ISO_IR 192", "Петров^Пётр Ильич")],
)
def test_cyrillic_patient_name_indexed_as_unicode(node, tmp_path, charset, name):
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), charset=charset, patient_name=name)
    path = write(ds, tmp_path / "cyr.dcm")
    encoded = path.read_bytes()
    assert name.encode("utf-8") not in encoded or charset == "ISO_IR 192"
    storescu(node, path)
    rows = index_rows(node, "SELECT patient_name, patient_name_key, charset FROM patient")
    assert rows == [(name, name.casefold(), charset)]


def test_sigterm_finishes_inflight_association_and_exits_0(node, tmp_path):
    write_corpus(tmp_path / "corpus", studies=1, series=1, instances=150, size="ct")
    proc = subprocess.Popen(
        [
            "storescu",
            "-aet",
            "SLOW",
            "-aec",
            NODE_AE,
            "+sd",
            "+r",
            "127.0.0.1",
            str(node.dicom_port),
            str(tmp_path / "corpus"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while node.count() < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.stop(signal.SIGTERM) == 0
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    node.start()
    assert node.count() == 150


def test_bad_config_value_names_the_key(node_factory):
    node = node_factory(dicom={"port": "abc"})
    result = node.cli("serve", timeout=30)
    assert result.returncode == 2
    assert "[dicom].port" in result.stderr
    assert "expected an integer from 1 to 65535" in result.stderr
    node = node_factory(
        "dup",
        remotes=[
            {"name": "a", "ae_title": "PACS", "host": "127.0.0.1", "port": 104},
            {"name": "b", "ae_title": "PACS", "host": "127.0.0.1", "port": 105},
        ],
    )
    result = node.cli("serve", timeout=30)
    assert result.returncode == 2
    assert "[[remotes]][1].ae_title: duplicate AE title 'PACS'" in result.stderr


def test_import_and_check_repair(node_factory, tmp_path):
    node = node_factory()
    write_corpus(tmp_path / "corpus", studies=1, series=1, instances=20)
    (tmp_path / "corpus" / "README.txt").write_text("not dicom")
    result = node.cli("import", "-q", str(tmp_path / "corpus"))
    assert result.returncode == 1  # one file was not DICOM
    assert "20 stored, 0 replaced, 1 failed" in result.stderr
    assert "README.txt: not a DICOM Part-10 file" in result.stderr

    assert node.cli("check").returncode == 0
    victim = next(node.storage.rglob("*.dcm"))
    victim.unlink()
    stray = write(make_dataset(study_uid=generate_uid(), series_uid=generate_uid()), tmp_path / "s.dcm")
    rel = node.storage / "1.2.3" / "1.2.3.4" / f"{dcmread(stray).SOPInstanceUID}.dcm"
    rel.parent.mkdir(parents=True)
    rel.write_bytes(stray.read_bytes())
    result = node.cli("check")
    assert result.returncode == 1
    assert "1 rows without file, 1 files without row" in result.stdout
    result = node.cli("check", "--repair")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "repaired" in result.stdout
    node.start()
    assert node.count() == 20  # 19 left + the stray one re-indexed


def test_association_cut_mid_instance_leaves_nothing(node):
    """A peer that vanishes halfway through a data set: no row, no file, no temp file."""
    with RawPeer(node.dicom_port) as peer:
        reply = peer.associate(NODE_AE, calling="CUTTER", contexts=((CT_IMAGE_STORAGE, (EXPLICIT_VR_LE,)),))
        assert reply.kind == 0x02
        peer.send(p_data(1, 0x03, store_rq(generate_uid())))
        peer.send(p_data(1, 0x00, b"\x08\x00\x16\x00" + b"\x00" * 5000))
        time.sleep(0.5)
        peer.send(pdu(0x07, bytes(4)))  # A-ABORT, the data set never finished
    deadline = time.monotonic() + 10
    while any((node.storage / ".tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any((node.storage / ".tmp").iterdir())
    assert node.count() == 0
    assert dcmtk("echoscu", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port)).returncode == 0


def test_fragmented_ct_instances_byte_identical(node_factory, tmp_path):
    """Small PDUs both ways: the node's own limit and the sender's; every fragment lands in order."""
    node = node_factory(dicom={"max_pdu": 16384}).start()
    sent = write_corpus(tmp_path / "ct", studies=1, series=1, instances=3, size="ct")
    dcmtk(
        "storescu",
        "-aec",
        NODE_AE,
        "--max-send-pdu",
        "4096",
        "--max-pdu",
        "4096",
        "+sd",
        "+r",
        "127.0.0.1",
        str(node.dicom_port),
        str(tmp_path / "ct"),
    )
    assert node.count() == 3
    for path in sent:
        sop_uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(stored_path(node, sop_uid)) == dataset_bytes(path)


JPEG_LS = "1.2.840.10008.1.2.4.80"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"


@pytest.mark.parametrize(
    ("proposed", "accepted"),
    [
        # The peer's compressed first choice: it sends what it holds, stored as received.
        ((JPEG_LS, EXPLICIT_VR_LE, IMPLICIT_VR_LE), JPEG_LS),
        # Uncompressed first: explicit VR (the VRs of private elements kept), as DCMTK's storescp does.
        ((IMPLICIT_VR_LE, EXPLICIT_VR_LE), EXPLICIT_VR_LE),
        ((IMPLICIT_VR_LE,), IMPLICIT_VR_LE),
    ],
    ids=["jpeg-ls-first", "implicit-first", "implicit-only"],
)
def test_storage_context_takes_the_peers_compressed_first_choice(node, tmp_path, proposed, accepted):
    """One presentation context with several syntaxes: what the node accepts, and what it then stores."""
    from bench.corpus import encode_as

    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), phantom=True)
    original = encode_as(ds, accepted, tmp_path / "original.dcm")
    ae = AE(ae_title="COMBINED")
    ae.add_requested_context(CTImageStorage, list(proposed))
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    try:
        assert [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts] == [accepted]
        status = assoc.send_c_store(original)
    finally:
        assoc.release()
    assert status.Status == 0x0000
    stored = stored_path(node, ds.SOPInstanceUID)
    assert str(dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID) == accepted
    assert dataset_bytes(stored) == dataset_bytes(original)
