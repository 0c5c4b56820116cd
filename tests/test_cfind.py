"""C-FIND against a running node: DCMTK findscu and pynetdicom as SCU, every model and level."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind as PATIENT_ROOT,
)
from pynetdicom.sop_class import (
    PatientStudyOnlyQueryRetrieveInformationModelFind as PATIENT_STUDY_ONLY,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT,
)

from bench.corpus import make_dataset, write
from tests.harness import NODE_AE, RunningNode, dcmtk, node_config

PENDING = (0xFF00, 0xFF01)
U = {k: generate_uid() for k in ("A", "B", "C", "D", "E", "A_CT", "A_MR", "B_CT", "C_CT", "D_CT", "E_CT")}
MANY = 300  # instances of study E, enough for a C-CANCEL to land mid-stream


def _corpus(folder: Path) -> None:
    studies = [
        # study, series, pid, name, charset, accession, date, modality, count
        ("A", "A_CT", "P1", "DOE^JOHN", None, "ACC1", "20240110", "CT", 2),
        ("A", "A_MR", "P1", "DOE^JOHN", None, "ACC1", "20240110", "MR", 1),
        ("B", "B_CT", "P1", "DOE^JOHN", None, "ACC2", "20240120", "CT", 1),
        ("C", "C_CT", "P2", "Иванов^Иван", "ISO_IR 144", "CYR1", "20231231", "CT", 1),
        ("D", "D_CT", "P3", "Петров^Пётр", "ISO_IR 192", "CYR2", "20240201", "CT", 1),
        ("E", "E_CT", "P4", "MANY^IMAGES", None, "MANY", "20200101", "CT", MANY),
    ]
    for n, (study, series, pid, name, charset, acc, date, modality, count) in enumerate(studies):
        for i in range(count):
            ds = make_dataset(
                study_uid=U[study],
                series_uid=U[series],
                patient_id=pid,
                patient_name=name,
                charset=charset,
                accession=acc,
                study_date=date,
                modality=modality,
                series_number=n + 1,
                instance_number=i + 1,
                sop_class_uid=MRImageStorage
                if modality == "MR"
                else make_dataset.__kwdefaults__["sop_class_uid"],
            )
            write(ds, folder / series / f"{i:04d}.dcm")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfind")
    _corpus(root / "corpus")
    n = RunningNode(root, node_config(root, storage={"fsync": False}))
    result = n.cli("import", "-q", str(root / "corpus"))
    assert result.returncode == 0, result.stderr
    n.start()
    yield n
    n.stop()


def find(node, identifier: Dataset, model=STUDY_ROOT) -> tuple[list[Dataset], Dataset]:
    """(pending identifiers, final status) of one C-FIND."""
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        pending, final = [], None
        for status, ds in assoc.send_c_find(identifier, model):
            assert status is not None, "no response"
            if status.Status in PENDING:
                pending.append(ds)
            else:
                final = status
        return pending, final
    finally:
        assoc.release()


def ident(level: str, **keys) -> Dataset:
    ds = Dataset()
    if "SpecificCharacterSet" in keys:  # first, so that the names below encode with it
        ds.SpecificCharacterSet = keys.pop("SpecificCharacterSet")
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def accessions(node, **keys) -> list[str]:
    pending, final = find(node, ident("STUDY", **{"AccessionNumber": "", **keys}))
    assert final.Status == 0x0000
    return sorted(ds.AccessionNumber for ds in pending)


def test_findscu_study_root_as_in_background(node, tmp_path):
    dcmtk(
        "findscu", "-S", "-aet", "ME", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port),
        "-k", "0008,0052=STUDY", "-k", "PatientName=DOE^JOHN", "-k", "StudyInstanceUID",
        "-k", "NumberOfStudyRelatedInstances", "-X", "-od", str(tmp_path),
    )  # fmt: skip
    found = {(str(d.StudyInstanceUID), int(d.NumberOfStudyRelatedInstances)) for d in _responses(tmp_path)}
    assert found == {(U["A"], 3), (U["B"], 1)}
    assert "find" in node.log()


def test_findscu_patient_root_patient_level(node, tmp_path):
    dcmtk(
        "findscu", "-P", "-aet", "ME", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port),
        "-k", "0008,0052=PATIENT", "-k", "PatientID=P1", "-k", "PatientName",
        "-k", "NumberOfPatientRelatedStudies", "-k", "NumberOfPatientRelatedInstances",
        "-X", "-od", str(tmp_path),
    )  # fmt: skip
    (rsp,) = _responses(tmp_path)
    assert str(rsp.PatientName) == "DOE^JOHN"
    assert (int(rsp.NumberOfPatientRelatedStudies), int(rsp.NumberOfPatientRelatedInstances)) == (2, 4)


def _responses(folder: Path) -> list[Dataset]:
    return [dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]


PID, STUDY, SERIES = "PatientID", "StudyInstanceUID", "SeriesInstanceUID"
CYRILLIC = {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "петров*"}


@pytest.mark.parametrize(
    ("model", "level", "keys", "key", "expected"),
    [
        (PATIENT_ROOT, "PATIENT", {PID: "P1"}, PID, {"P1"}),
        (PATIENT_ROOT, "STUDY", {PID: "P1", STUDY: ""}, STUDY, {U["A"], U["B"]}),
        (PATIENT_ROOT, "SERIES", {PID: "P1", STUDY: U["A"], "Modality": "MR"}, SERIES, {U["A_MR"]}),
        (PATIENT_ROOT, "IMAGE", {PID: "P1", STUDY: U["A"], SERIES: U["A_MR"]}, SERIES, {U["A_MR"]}),
        (STUDY_ROOT, "STUDY", {"AccessionNumber": "ACC2"}, STUDY, {U["B"]}),
        (STUDY_ROOT, "SERIES", {STUDY: U["A"], SERIES: ""}, SERIES, {U["A_CT"], U["A_MR"]}),
        (STUDY_ROOT, "IMAGE", {SERIES: U["B_CT"], "InstanceNumber": "1"}, SERIES, {U["B_CT"]}),
        (PATIENT_STUDY_ONLY, "PATIENT", CYRILLIC, PID, {"P3"}),
        (PATIENT_STUDY_ONLY, "STUDY", {PID: "P2"}, STUDY, {U["C"]}),
    ],
)
def test_every_model_and_level(node, model, level, keys, key, expected):
    pending, final = find(node, ident(level, **keys), model)
    assert final.Status == 0x0000
    assert {str(ds.get(key)) for ds in pending} == expected
    assert all(ds.QueryRetrieveLevel == level for ds in pending)
    if level == "IMAGE":
        assert all(ds.SOPInstanceUID for ds in pending)


def test_matching_rules(node):
    assert accessions(node, AccessionNumber="ACC*") == ["ACC1", "ACC2"]
    assert accessions(node, AccessionNumber="CYR?") == ["CYR1", "CYR2"]
    assert accessions(node, PatientName="doe^john") == ["ACC1", "ACC2"]
    assert accessions(node, StudyDate="20240101-20240131") == ["ACC1", "ACC2"]
    assert accessions(node, StudyDate="-20231231") == ["CYR1", "MANY"]
    assert accessions(node, StudyDate="20240120-") == ["ACC2", "CYR2"]
    assert accessions(node, StudyInstanceUID=f"{U['B']}\\{U['C']}") == ["ACC2", "CYR1"]
    assert accessions(node, ModalitiesInStudy="MR") == ["ACC1"]
    assert accessions(node) == ["ACC1", "ACC2", "CYR1", "CYR2", "MANY"]


def test_universal_matching_returns_values_and_computed_keys(node):
    keys = ident(
        "STUDY",
        AccessionNumber="ACC1",
        StudyDescription="",
        StudyDate="",
        PatientName="",
        ModalitiesInStudy="",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
        PatientAge="",
    )
    (ds,), final = find(node, keys)
    assert final.Status == 0x0000
    assert ds.StudyDescription == "Synthetic study"
    assert ds.StudyDate == "20240110"
    assert str(ds.PatientName) == "DOE^JOHN"
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert (int(ds.NumberOfStudyRelatedSeries), int(ds.NumberOfStudyRelatedInstances)) == (2, 3)
    assert "PatientAge" in ds and ds.PatientAge in ("", None)  # asked for, not held: returned empty
    (series,), _ = find(node, ident("SERIES", SeriesInstanceUID=U["A_CT"], NumberOfSeriesRelatedInstances=""))
    assert int(series.NumberOfSeriesRelatedInstances) == 2


@pytest.mark.parametrize(
    ("request_charset", "keys", "response_charset", "name"),
    [
        ("ISO_IR 192", {"PatientName": "иванов*"}, "ISO_IR 192", "Иванов^Иван"),
        ("ISO_IR 144", {"PatientName": "ИВАНОВ^ИВАН"}, "ISO_IR 144", "Иванов^Иван"),
        ("ISO_IR 144", {"PatientName": "петров*"}, "ISO_IR 144", "Петров^Пётр"),
        # Latin-1 cannot hold Cyrillic: the answer comes in UTF-8.
        ("ISO_IR 100", {"PatientID": "P3", "PatientName": ""}, "ISO_IR 192", "Петров^Пётр"),
        (None, {"PatientName": "DOE*"}, None, "DOE^JOHN"),
    ],
)
def test_character_sets(node, request_charset, keys, response_charset, name):
    if request_charset:
        keys = {"SpecificCharacterSet": request_charset, **keys}
    pending, final = find(node, ident("STUDY", AccessionNumber="", **keys))
    assert final.Status == 0x0000
    assert pending
    for ds in pending:
        assert ds.get("SpecificCharacterSet") == response_charset
        assert str(ds.PatientName) == name


def test_findscu_cyrillic_latin_query_gets_utf8(node, tmp_path):
    dcmtk(
        "findscu", "-S", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port),
        "-k", "0008,0052=STUDY", "-k", "AccessionNumber=CYR*", "-k", "PatientName",
        "-X", "-od", str(tmp_path),
    )  # fmt: skip
    got = {(str(ds.PatientName), ds.SpecificCharacterSet) for ds in _responses(tmp_path)}
    assert got == {("Иванов^Иван", "ISO_IR 192"), ("Петров^Пётр", "ISO_IR 192")}


def test_c_cancel_stops_the_stream(node):
    ae = AE(ae_title="PYFIND")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        responses = assoc.send_c_find(ident("IMAGE", SeriesInstanceUID=U["E_CT"]), STUDY_ROOT, msg_id=7)
        status, _ = next(responses)
        assert status.Status in PENDING
        assoc.send_c_cancel(7, query_model=STUDY_ROOT)
        rest = [s.Status for s, _ in responses]
    finally:
        assoc.release()
    assert rest[-1] == 0xFE00  # Cancel
    assert 1 + len(rest) - 1 < MANY
    # The node keeps serving on the same port.
    assert accessions(node, AccessionNumber="MANY") == ["MANY"]


@pytest.mark.parametrize(
    ("model", "identifier", "named"),
    [
        (STUDY_ROOT, ident("STUDY", SeriesInstanceUID=""), "SeriesInstanceUID"),
        (STUDY_ROOT, ident("PATIENT", PatientID=""), "QueryRetrieveLevel PATIENT"),
        (STUDY_ROOT, ident("WHATEVER"), "WHATEVER"),
        (STUDY_ROOT, ident("STUDY", PatientAge="040Y"), "PatientAge"),
        (STUDY_ROOT, ident("STUDY", StudyDate="yesterday"), "StudyDate"),
        (PATIENT_STUDY_ONLY, ident("SERIES", Modality="CT"), "SERIES"),
        (STUDY_ROOT, Dataset(), "QueryRetrieveLevel"),
    ],
)
def test_malformed_identifier_fails_naming_the_problem(node, model, identifier, named):
    if "QueryRetrieveLevel" not in identifier:
        identifier.PatientName = "DOE*"
    pending, final = find(node, identifier, model)
    assert pending == []
    assert final.Status == 0xA900
    assert named in final.ErrorComment
    assert accessions(node, AccessionNumber="ACC2") == ["ACC2"]
