"""The ingest path in process (real SQLite index and store, no network): subscribers and compensation.

An index hook runs inside the indexing transaction, a listener after it; a
hook that fails makes the indexing fail after the file was written, which is
exactly Orthanc's compensation case: the new file must go, a replaced file
must come back, before the failure is answered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.corpus import encode_as, make_dataset, write
from node.index.db import open_database
from node.index.migrate import migrate
from node.index.models import Instance
from node.ingest import Ingest, Ingested, Source, Status
from node.statuses import PROCESSING_FAILURE
from node.store import InstanceStore
from tests.harness import index_database

RLE = "1.2.840.10008.1.2.5"
JPEG_LS = "1.2.840.10008.1.2.4.80"
EXPLICIT_VR = "1.2.840.10008.1.2.1"


@pytest.fixture
def ingest(tmp_path) -> Ingest:
    migrate(open_database(index_database(tmp_path), durable=False))
    return Ingest(InstanceStore(tmp_path / "storage", fsync=False))


def _file(tmp_path: Path, **kw) -> Path:
    kw.setdefault("study_uid", generate_uid())
    kw.setdefault("series_uid", generate_uid())
    ds = make_dataset(**kw)
    return write(ds, tmp_path / "in" / f"{generate_uid()}.dcm")


def test_listeners_hear_every_outcome_after_the_commit(ingest, tmp_path):
    heard: list[Ingested] = []
    rows_seen: list[int] = []
    ingest.add_listener(heard.append)
    # After the commit: the row is visible to another connection's reader (here: a peewee count).
    ingest.add_listener(lambda e: rows_seen.append(Instance.select().count()))
    source = Source("dimse", calling_aet="MODALITY")
    stored = ingest.ingest_file(_file(tmp_path), source, take=True)
    assert stored.status is Status.STORED
    refused = ingest.ingest_file(tmp_path / "in" / "missing.dcm", source, take=False)
    assert refused.status is Status.FAILED
    assert [e.outcome for e in heard] == [stored, refused]
    assert all(e.source is source and e.seconds >= 0 for e in heard)
    assert rows_seen == [1, 1]


def test_a_listener_that_fails_changes_nothing_for_the_sender(ingest, tmp_path):
    def broken(event: Ingested) -> None:
        raise RuntimeError("metrics backend down")

    ingest.add_listener(broken)
    assert ingest.ingest_file(_file(tmp_path), Source("stow"), take=True).ok


def test_failed_indexing_removes_the_new_file_and_restores_a_replaced_one(ingest, tmp_path):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = _file(tmp_path, study_uid=study, series_uid=series, sop_uid=sop, study_description="FIRST")
    assert ingest.ingest_file(first, Source("import"), take=False).ok
    stored = ingest.store.absolute(ingest.store.relative_path(study, series, sop))
    original = stored.read_bytes()

    def failing_hook(instance, source) -> None:
        raise RuntimeError("outbox unavailable")

    ingest.add_index_hook(failing_hook)
    # A replacement (same place) whose indexing fails: the first file is back, byte for byte.
    second = _file(tmp_path, study_uid=study, series_uid=series, sop_uid=sop, study_description="SECOND")
    outcome = ingest.ingest_file(second, Source("import"), take=True)
    assert outcome.status is Status.FAILED and outcome.failure_code == PROCESSING_FAILURE
    assert "outbox unavailable" in outcome.reason
    assert stored.read_bytes() == original
    assert not second.exists()
    # A new instance whose indexing fails: no file, no row.
    third = _file(tmp_path)
    outcome = ingest.ingest_file(third, Source("import"), take=True)
    assert not outcome.ok
    assert sorted(p for p in ingest.store.root.rglob("*.dcm")) == [stored]
    assert not list(ingest.store.tmp.iterdir())
    assert Instance.select().count() == 1


def test_migration_0004_fills_each_study_from_its_patient(tmp_path):
    import importlib

    db = open_database(index_database(tmp_path / "old"), durable=False)
    for name in ("0001_initial", "0002_export_jobs", "0003_outbox"):
        importlib.import_module(f"migrations.{name}").apply(db)
    db.execute_sql(
        "INSERT INTO patient VALUES (1, 'P1', 'X^ANNE', 'x^anne', '19700101', 'F', 'ISS', '', "
        "'2024-01-01', '2024-01-01')"
    )
    for n in (1, 2):
        db.execute_sql(
            f"INSERT INTO study VALUES ({n}, '1.2.{n}', 1, '20240101', '', 'ACC{n}', '', '', '', '', '', '', "
            "'2024-01-01', '2024-01-01')"
        )
    importlib.import_module("migrations.0004_patient_per_study").apply(db)
    rows = db.execute_sql(
        "SELECT study_uid, patient_name, patient_name_key, patient_birth_date, patient_sex,"
        " issuer_of_patient_id, other_patient_ids FROM study ORDER BY id"
    ).fetchall()
    assert rows == [(f"1.2.{n}", "X^ANNE", "x^anne", "19700101", "F", "ISS", "") for n in (1, 2)]
    assert db.execute_sql("SELECT other_patient_ids FROM patient").fetchall() == [("",)]


def test_replace_moves_a_study_to_the_patient_its_newest_instance_names(tmp_path):
    from node.index.models import Patient, Study

    migrate(open_database(tmp_path / "storage" / "index.sqlite", durable=False))
    ingest = Ingest(InstanceStore(tmp_path / "storage", fsync=False), duplicates="replace")
    study, series = generate_uid(), generate_uid()
    for _ in range(2):
        assert ingest.ingest_file(
            _file(tmp_path, study_uid=study, series_uid=series, patient_id="WRONG-ID"),
            Source("import"),
            take=True,
        ).ok
    corrected = _file(tmp_path, study_uid=study, series_uid=series, patient_id="RIGHT-ID")
    outcome = ingest.ingest_file(corrected, Source("import"), take=True)
    assert outcome.status is Status.STORED and outcome.moved_from_study == study
    assert [p.patient_id for p in Patient.select()] == ["RIGHT-ID"]  # the emptied patient is gone
    assert Study.get(Study.study_uid == study).patient.patient_id == "RIGHT-ID"
    assert Instance.select().count() == 3


def test_transcode_to_stores_and_indexes_the_configured_syntax(tmp_path):
    """[storage].transcode_to: RLE in, JPEG-LS on disk and in the index; the unconvertible as received."""
    migrate(open_database(index_database(tmp_path), durable=False))
    store = InstanceStore(tmp_path / "storage", fsync=False)
    ingest = Ingest(store, transcode_to=JPEG_LS)
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), phantom=True)
    received = encode_as(ds, RLE, tmp_path / "in" / "rle.dcm")
    original = dcmread(received).pixel_array
    outcome = ingest.ingest_file(received, Source("dimse"), take=True)
    assert outcome.status is Status.STORED, outcome.reason
    row = Instance.get(Instance.sop_uid == ds.SOPInstanceUID)
    stored = dcmread(store.absolute(row.path))
    assert row.transfer_syntax == stored.file_meta.TransferSyntaxUID == JPEG_LS
    assert row.size == store.absolute(row.path).stat().st_size == outcome.size
    assert np.array_equal(stored.pixel_array, original)
    assert not received.exists() and not list(store.tmp.iterdir())  # both temp files are gone
    # No pixel data to compress: stored as received, not refused.
    report = make_dataset(study_uid=generate_uid(), series_uid=generate_uid())
    del report.PixelData
    path = write(report, tmp_path / "in" / "report.dcm")
    assert ingest.ingest_file(path, Source("stow"), take=False).ok
    assert Instance.get(Instance.sop_uid == report.SOPInstanceUID).transfer_syntax == EXPLICIT_VR
    assert path.exists()  # not taken: the caller's file stays
