"""Filed under the right patient: the instance-identity policy and patient attributes per study.

Real peers: DCMTK storescu and findscu, pynetdicom, STOW-RS over httpx, the
ZIP export of the node itself.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind as PATIENT_ROOT
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT

from bench.corpus import make_dataset, write
from tests import harness
from tests.harness import NODE_AE, RunningNode, dcmtk, node_config
from tests.test_stow import content_type, dicom_parts, failed_items, multipart, post, referenced_items


def rows(node: RunningNode, sql: str, *args) -> list[tuple]:
    return node.index_rows(sql, *args)


def study_of(node: RunningNode, sop_uid: str) -> list[str]:
    """The Study Instance UID the index files *sop_uid* under (one per row)."""
    sql = (
        "SELECT st.study_uid FROM instance i JOIN series se ON se.id = i.series_id"
        " JOIN study st ON st.id = se.study_id WHERE i.sop_uid = ?"
    )
    return [uid for (uid,) in rows(node, sql, sop_uid)]


def send(node: RunningNode, path: Path) -> Dataset:
    """C-STORE one file with pynetdicom; the response status data set."""
    return harness.c_store(node.ae_title, node.dicom_port, dcmread(path))


def zip_ready(node: RunningNode, accession: str, timeout: float = 30) -> bytes:
    """Prepare the accession's archive and return it (waiting while it is being built)."""
    r = httpx.post(f"{node.url}/accessions/{accession}/zip", timeout=30)
    assert r.status_code in (200, 202), r.text
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{node.url}/accessions/{accession}/zip", timeout=30)
        if r.status_code != 202:
            assert r.status_code == 200, r.text
            return r.content
        assert time.monotonic() < deadline, "archive not ready"
        time.sleep(0.05)


def _names(archive: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(archive)).namelist()


def zip_is_fresh(node: RunningNode, accession: str) -> bool:
    """True when the cached archive is served as it is (POST answers 200 ready, nothing to rebuild)."""
    return httpx.post(f"{node.url}/accessions/{accession}/zip", timeout=30).status_code == 200


def study(
    folder: Path, *, patient_id: str, accession: str, name: str = "DOE^JOHN", sop_uids=(), n: int = 2
) -> list[Path]:
    study_uid, series_uid = generate_uid(), generate_uid()
    uids = list(sop_uids) + [generate_uid() for _ in range(n - len(sop_uids))]
    return [
        write(
            make_dataset(
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=uid,
                patient_id=patient_id,
                patient_name=name,
                accession=accession,
                instance_number=i + 1,
            ),
            folder / f"{i}.dcm",
        )
        for i, uid in enumerate(uids)
    ]


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> RunningNode:
    root = tmp_path_factory.mktemp("identity")
    n = RunningNode(root, node_config(root)).start()
    yield n
    n.stop()


def test_same_sop_uid_in_another_patients_study_is_refused_over_every_door(node, tmp_path):
    shared = generate_uid()
    first = study(tmp_path / "a", patient_id="PID-1", name="FIRST^PAT", accession="DUPA", sop_uids=[shared])
    harness.storescu(node.ae_title, node.dicom_port, tmp_path / "a")
    held = next(node.storage.rglob(f"{shared}.dcm"))
    held_bytes = held.read_bytes()
    archive = zip_ready(node, "DUPA")
    study_a = dcmread(first[0]).StudyInstanceUID
    before = node.count()

    second = study(tmp_path / "b", patient_id="PID-2", name="OTHER^PAT", accession="DUPB", sop_uids=[shared])
    study_b = dcmread(second[0]).StudyInstanceUID

    # storescu: the clashing instance fails, naming the study that holds it; its sibling is stored.
    result = dcmtk(*harness.storescu_args(node.ae_title, node.dicom_port, second[0]), "-d", check=False)
    output = result.stdout + result.stderr
    assert "DIMSE Status                  : 0xa900" in output, output
    assert f"[{study_a}]" in output or f"[already in study {study_a}]" in output  # its ErrorComment
    # pynetdicom: status and ErrorComment.
    status = send(node, second[0])
    assert status.Status == 0xA900
    # "already in study <UID>", or the UID alone when both do not fit in 64 characters.
    assert status.ErrorComment in (f"already in study {study_a}", study_a)
    # STOW-RS: FailedSOPSequence with FailureReason and the same comment; 409, nothing stored.
    r = post(node, multipart(dicom_parts([second[0]])), content_type())
    assert r.status_code == 409, r.text
    (item,) = failed_items(r.json())
    assert item["00081197"]["Value"] == [0xA900]
    assert item["00081155"]["Value"] == [shared]
    comment = item["00000902"]["Value"][0]
    assert study_a in comment and study_b in comment and "PID-1" in comment

    # Nothing changed: the first study's file, row and cached archive are as they were.
    assert node.count() == before
    assert held.read_bytes() == held_bytes
    assert study_of(node, shared) == [study_a]
    assert not list(node.storage.glob(f"{study_b}/**/{shared}.dcm"))
    assert zip_is_fresh(node, "DUPA")
    assert zip_ready(node, "DUPA") == archive
    assert not list((node.storage / ".tmp").iterdir())
    # One WARNING line per refusal, naming both studies.
    refusals = [line for line in node.log().splitlines() if "WARNING" in line and shared in line]
    assert len(refusals) == 3, refusals
    assert all(study_a in line for line in refusals)

    # The other instance of the second study (a fresh UID) went in.
    harness.storescu(node.ae_title, node.dicom_port, second[1])
    assert node.count() == before + 1
    assert node.cli("check").returncode == 0


def test_resent_identical_instance_stays_one_row_and_succeeds(node, tmp_path):
    files = study(tmp_path / "s", patient_id="PID-R", name="RESENT^PAT", accession="RESENT", n=1)
    sop = dcmread(files[0]).SOPInstanceUID
    harness.storescu(node.ae_title, node.dicom_port, files[0])
    before = node.count()
    assert send(node, files[0]).Status == 0x0000
    r = post(node, multipart(dicom_parts(files)), content_type())
    assert r.status_code == 200 and len(referenced_items(r.json())) == 1
    # Twice in one body: ingested by parallel workers, serialised per SOP Instance UID.
    r = post(node, multipart(dicom_parts(files * 4)), content_type())
    assert r.status_code == 200 and len(referenced_items(r.json())) == 4
    harness.storescu(node.ae_title, node.dicom_port, files[0])
    assert node.count() == before
    assert rows(node, "SELECT COUNT(*) FROM instance WHERE sop_uid = ?", sop) == [(1,)]


def test_study_held_for_another_patient_is_refused(node, tmp_path):
    files = study(tmp_path / "s", patient_id="PID-S1", name="STUDY^OWNER", accession="OWNER", n=1)
    harness.storescu(node.ae_title, node.dicom_port, files[0])
    ds = dcmread(files[0])
    intruder = make_dataset(
        study_uid=ds.StudyInstanceUID, series_uid=generate_uid(), patient_id="PID-S2", accession="OWNER"
    )
    status = send(node, write(intruder, tmp_path / "intruder.dcm"))
    assert status.Status == 0xA900
    assert "PID-S1" in status.ErrorComment
    assert rows(node, "SELECT COUNT(*) FROM patient WHERE patient_id = 'PID-S2'") == [(0,)]


def test_replace_moves_the_instance_and_invalidates_both_archives(tmp_path):
    node = RunningNode(tmp_path / "n", node_config(tmp_path / "n", storage={"duplicates": "replace"})).start()
    try:
        shared = generate_uid()
        first = study(tmp_path / "a", patient_id="PID-A", accession="MOVEA", sop_uids=[shared], n=3)
        second = study(tmp_path / "b", patient_id="PID-B", name="B^B", accession="MOVEB", n=1)
        harness.storescu(node.ae_title, node.dicom_port, tmp_path / "a", tmp_path / "b")
        archive_a, archive_b = zip_ready(node, "MOVEA"), zip_ready(node, "MOVEB")
        assert zip_is_fresh(node, "MOVEA") and zip_is_fresh(node, "MOVEB")
        study_a = dcmread(first[0]).StudyInstanceUID
        study_b = dcmread(second[0]).StudyInstanceUID

        moved = dcmread(second[0])
        moved.SOPInstanceUID = moved.file_meta.MediaStorageSOPInstanceUID = shared
        status = send(node, write(moved, tmp_path / "moved.dcm"))
        assert status.Status == 0x0000
        # The instance now lives in study B only; its old file is gone.
        assert study_of(node, shared) == [study_b]
        assert [p.parent.parent.name for p in node.storage.rglob(f"{shared}.dcm")] == [study_b]
        # Both studies changed: neither cached archive is served as it was.
        assert not zip_is_fresh(node, "MOVEA") and not zip_is_fresh(node, "MOVEB")
        new_a, new_b = zip_ready(node, "MOVEA"), zip_ready(node, "MOVEB")
        assert new_a != archive_a and new_b != archive_b
        assert not any(shared in name for name in _names(new_a))
        assert any(shared in name for name in _names(new_b))
        assert "replaced" in node.log() and study_a in node.log()
        assert node.cli("check").returncode == 0
    finally:
        node.stop()


# -- patient attributes per study -------------------------------------------------


def _find(node, identifier: Dataset, model=STUDY_ROOT) -> list[Dataset]:
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        found = []
        for status, ds in assoc.send_c_find(identifier, model):
            if status.Status in (0xFF00, 0xFF01):
                found.append(ds)
            else:
                assert status.Status == 0x0000, status
        return found
    finally:
        assoc.release()


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def test_each_study_answers_its_own_patient_name(node, tmp_path):
    anna = study(tmp_path / "anna", patient_id="PID-X", name="X^ANNA", accession="ANNA1", n=1)
    harness.storescu(node.ae_title, node.dicom_port, tmp_path / "anna")
    anne = study(tmp_path / "anne", patient_id="PID-X", name="X^ANNE", accession="ANNE2", n=1)
    harness.storescu(node.ae_title, node.dicom_port, tmp_path / "anne")
    uid_anna, uid_anne = (dcmread(f[0]).StudyInstanceUID for f in (anna, anne))

    for name, uid in (("X^ANNA", uid_anna), ("X^ANNE", uid_anne)):
        # C-FIND at STUDY, SERIES and IMAGE level: each study by its own name.
        for level in ("STUDY", "SERIES", "IMAGE"):
            found = _find(node, _identifier(level, PatientName=name, StudyInstanceUID=""))
            assert [(str(d.StudyInstanceUID), str(d.PatientName)) for d in found] == [(uid, name)], level
        # DCMTK findscu too.
        out = dcmtk(
            "findscu", "-S", "-aet", "ME", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port),
            "-k", "0008,0052=STUDY", "-k", f"PatientName={name}", "-k", "StudyInstanceUID",
        )  # fmt: skip
        assert uid in out.stderr + out.stdout
        # QIDO-RS.
        r = httpx.get(f"{node.url}/dicom-web/studies", params={"PatientName": name})
        assert r.status_code == 200
        assert [(s["0020000D"]["Value"][0], s["00100010"]["Value"][0]["Alphabetic"]) for s in r.json()] == [
            (uid, name)
        ]
    # Both studies under the patient, each with its own name.
    r = httpx.get(f"{node.url}/dicom-web/studies", params={"PatientID": "PID-X"})
    assert sorted(s["00100010"]["Value"][0]["Alphabetic"] for s in r.json()) == ["X^ANNA", "X^ANNE"]
    # The PATIENT level answers the most recent values.
    found = _find(node, _identifier("PATIENT", PatientID="PID-X", PatientName=""), PATIENT_ROOT)
    assert [str(d.PatientName) for d in found] == ["X^ANNE"]
