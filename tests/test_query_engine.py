"""The query engine over a real index filled through the ingest path (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from bench.corpus import make_dataset, write
from node.index import query as q
from node.index.db import open_database
from node.index.migrate import migrate
from node.ingest import Ingest, Source
from node.store import InstanceStore
from tests.harness import index_database

UIDS = {name: generate_uid() for name in ("S1", "S2", "S3", "S4", "S1CT", "S1MR", "S2CT", "S3US", "S4CT")}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> dict[str, str]:
    """Four studies of three patients, ingested like any instance; returns the study UIDs."""
    root: Path = tmp_path_factory.mktemp("qindex")
    ingest = Ingest(InstanceStore(root / "storage", fsync=False))
    migrate(open_database(index_database(root), durable=False))
    layout = [
        # study, series, patient id, name, charset, accession, date, modality, sop class, instances
        ("S1", "S1CT", "P1", "Иванов^Иван", "ISO_IR 192", "ACC1", "20240110", "CT", CTImageStorage, 3),
        ("S1", "S1MR", "P1", "Иванов^Иван", "ISO_IR 192", "ACC1", "20240110", "MR", MRImageStorage, 2),
        ("S2", "S2CT", "P2", "DOE^JOHN", None, "ACC2", "20240120", "CT", CTImageStorage, 2),
        ("S3", "S3US", "P2", "DOE^JOHN", None, "AC_3", "20240201", "US", CTImageStorage, 1),
        ("S4", "S4CT", "P3", "doe^jane", None, "X%Y", "20231231", "CT", CTImageStorage, 1),
    ]
    for n, (study, series, pid, name, charset, acc, date, modality, sop_class, count) in enumerate(layout):
        for i in range(count):
            ds = make_dataset(
                study_uid=UIDS[study],
                series_uid=UIDS[series],
                patient_id=pid,
                patient_name=name,
                charset=charset,
                accession=acc,
                study_date=date,
                modality=modality,
                sop_class_uid=sop_class,
                instance_number=i + 1,
                series_number=n + 1,
            )
            path = write(ds, root / "in" / f"{series}_{i}.dcm")
            assert ingest.ingest_file(path, Source("import"), take=True).ok
    return UIDS


def studies(**filters: str) -> list[str]:
    """Accession numbers of the studies matching *filters*, in the engine's order."""
    query = q.Query("STUDY", {"AccessionNumber": "", **filters})
    return [m["AccessionNumber"] for m in q.run(query)]


def test_single_value_and_wildcards(index):
    assert studies(AccessionNumber="ACC2") == ["ACC2"]
    assert studies(AccessionNumber="acc2") == []  # case-sensitive outside person names
    assert studies(AccessionNumber="ACC*") == ["ACC1", "ACC2"]
    assert studies(AccessionNumber="AC?3") == ["AC_3"]
    # LIKE metacharacters in the value are literal: "_" and "%" match only themselves.
    assert studies(AccessionNumber="AC_*") == ["AC_3"]
    assert studies(AccessionNumber="X%*") == ["X%Y"]
    assert studies(AccessionNumber="*%*") == ["X%Y"]
    assert studies(AccessionNumber="*") == ["ACC1", "ACC2", "AC_3", "X%Y"]


def test_person_names_case_insensitive_and_cyrillic(index):
    assert studies(PatientName="doe*") == ["ACC2", "AC_3", "X%Y"]
    assert studies(PatientName="DOE^JANE") == ["X%Y"]
    assert studies(PatientName="иванов*") == ["ACC1"]
    assert studies(PatientName="ИВАНОВ^ИВАН") == ["ACC1"]
    (match,) = q.run(q.Query("STUDY", {"PatientName": "ИВАН*"}))
    assert match["PatientName"] == "Иванов^Иван"
    fuzzy = q.Query("STUDY", {"PatientName": "ива", "AccessionNumber": ""}, fuzzy=True)
    assert [m["AccessionNumber"] for m in q.run(fuzzy)] == ["ACC1"]
    fuzzy = q.Query("STUDY", {"PatientName": "jan", "AccessionNumber": ""}, fuzzy=True)
    assert [m["AccessionNumber"] for m in q.run(fuzzy)] == ["X%Y"]


def test_date_and_time_ranges(index):
    assert studies(StudyDate="20240110") == ["ACC1"]
    assert studies(StudyDate="20240101-20240131") == ["ACC1", "ACC2"]
    assert studies(StudyDate="-20231231") == ["X%Y"]
    assert studies(StudyDate="20240201-") == ["AC_3"]
    assert studies(StudyDate="2024.01.20") == ["ACC2"]
    assert studies(StudyDate="20240110\\20240201") == ["ACC1", "AC_3"]
    assert studies(StudyTime="1000-1100") == ["ACC1", "ACC2", "AC_3", "X%Y"]
    assert studies(StudyTime="1015") == ["ACC1", "ACC2", "AC_3", "X%Y"]  # 10:15 covers 10:15:00
    assert studies(StudyTime="-1014") == []


def test_uid_lists_and_universal_return_keys(index):
    wanted = q.Query("STUDY", {"StudyInstanceUID": f"{index['S2']}\\{index['S4']}", "StudyDescription": ""})
    matches = list(q.run(wanted))
    assert [m["StudyInstanceUID"] for m in matches] == [index["S2"], index["S4"]]
    assert all(m["StudyDescription"] == "Synthetic study" for m in matches)
    # A key the index does not hold comes back empty, not as an error.
    (m,) = q.run(q.Query("STUDY", {"StudyInstanceUID": index["S1"], "PatientAge": ""}))
    assert m["PatientAge"] == ""


def test_computed_keys(index):
    keys = (
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfPatientRelatedStudies",
    )
    (m,) = q.run(q.Query("STUDY", {"AccessionNumber": "ACC1"}, return_keys=keys))
    assert m["NumberOfStudyRelatedSeries"] == 2
    assert m["NumberOfStudyRelatedInstances"] == 5
    assert m["ModalitiesInStudy"] == ["CT", "MR"]
    assert m["SOPClassesInStudy"] == sorted([CTImageStorage, MRImageStorage])
    assert m["NumberOfPatientRelatedStudies"] == 1
    patient = q.Query(
        "PATIENT",
        {"PatientID": "P2"},
        return_keys=(
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances",
        ),
        root="PATIENT",
    )
    (m,) = q.run(patient)
    assert (m["NumberOfPatientRelatedStudies"], m["NumberOfPatientRelatedSeries"]) == (2, 2)
    assert m["NumberOfPatientRelatedInstances"] == 3
    series = q.Query(
        "SERIES",
        {"StudyInstanceUID": index["S1"], "Modality": "", "SeriesNumber": ""},
        return_keys=("NumberOfSeriesRelatedInstances",),
    )
    got = [(m["Modality"], m["NumberOfSeriesRelatedInstances"], m["SeriesNumber"]) for m in q.run(series)]
    assert got == [("CT", 3, 1), ("MR", 2, 2)]


def test_modalities_in_study_matching(index):
    assert studies(ModalitiesInStudy="MR") == ["ACC1"]
    assert studies(ModalitiesInStudy="CT\\US") == ["ACC1", "ACC2", "AC_3", "X%Y"]
    assert studies(ModalitiesInStudy="US") == ["AC_3"]


def test_every_level_and_model(index):
    (p,) = q.run(q.Query("PATIENT", {"PatientName": "doe^john"}, root="PATIENT"))
    assert p == {"PatientID": "P2", "PatientName": "DOE^JOHN"}
    # Patient Root carries the unique keys of every level down to the query level.
    image = q.Query("IMAGE", {"SeriesInstanceUID": index["S1MR"], "InstanceNumber": ""}, root="PATIENT")
    rows = list(q.run(image))
    assert [r["InstanceNumber"] for r in rows] == [1, 2]
    assert set(rows[0]) == {
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "InstanceNumber",
    }
    assert rows[0]["StudyInstanceUID"] == index["S1"]
    (only,) = q.run(q.Query("STUDY", {"PatientID": "P3"}, root="PATIENT_STUDY_ONLY"))
    assert only == {"PatientID": "P3", "StudyInstanceUID": index["S4"]}
    (one,) = q.run(q.Query("IMAGE", {"SeriesInstanceUID": index["S3US"], "InstanceNumber": "1"}))
    assert set(one) == {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber"}


def test_limit_and_offset_are_stable(index):
    everything = studies()
    page = q.Query("STUDY", {"AccessionNumber": ""}, limit=2, offset=1)
    assert [m["AccessionNumber"] for m in q.run(page)] == everything[1:3]
    tail = q.Query("STUDY", {"AccessionNumber": ""}, offset=3)
    assert [m["AccessionNumber"] for m in q.run(tail)] == everything[3:]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        (q.Query("SERIES", {"Modality": "CT", "SOPInstanceUID": ""}), "SOPInstanceUID"),
        (q.Query("STUDY", {"Modality": ""}), "Modality"),
        (q.Query("PATIENT", {"PatientID": ""}), "Study Root"),
        (q.Query("SERIES", {}, root="PATIENT_STUDY_ONLY"), "Patient/Study Only"),
        (q.Query("FRAME", {}), "'FRAME'"),
        (q.Query("STUDY", {"PatientAge": "040Y"}), "PatientAge"),
        (q.Query("STUDY", {"StudyDate": "2024-01-01"}), "'2024'"),
        (q.Query("STUDY", {"StudyDate": "2024*"}), "StudyDate"),
        (q.Query("STUDY", {"StudyInstanceUID": "1.2.abc"}), "'1.2.abc'"),
        (q.Query("SERIES", {"SeriesNumber": "two"}), "SeriesNumber"),
    ],
)
def test_bad_identifiers_name_the_problem(index, query, named):
    with pytest.raises(q.QueryError, match=named.replace("?", r"\?").replace("*", r"\*")):
        q.run(query)


def test_supported_keys_include_higher_levels():
    assert "PatientName" in q.supported_keys("STUDY")
    assert "ModalitiesInStudy" in q.supported_keys("SERIES")
    assert "Modality" not in q.supported_keys("STUDY")
    assert "SOPInstanceUID" in q.supported_keys("IMAGE")


def test_matching_instances_for_retrieve(index):
    refs = q.matching_instances(q.Query("STUDY", {"AccessionNumber": "ACC1"}))
    assert len(refs) == 5
    assert {r.sop_class_uid for r in refs} == {CTImageStorage, MRImageStorage}
    assert all(r.path.startswith(index["S1"] + "/") and r.size > 0 for r in refs)
    series = q.matching_instances(q.Query("SERIES", {"SeriesInstanceUID": index["S2CT"]}))
    assert len(series) == 2
    with pytest.raises(q.QueryError, match="no key with a value"):
        q.matching_instances(q.Query("STUDY", {"StudyInstanceUID": ""}))
