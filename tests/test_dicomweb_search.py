"""node.dicomweb.search over a real index: paging without a limit, across worker threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from node.dicomweb import search
from node.index.db import open_database
from node.index.migrate import migrate
from node.ingest import Ingest, Source
from node.store import InstanceStore
from tests.harness import index_database


@pytest.fixture(scope="module")
def seven_studies(tmp_path_factory) -> list[str]:
    root: Path = tmp_path_factory.mktemp("search")
    ingest = Ingest(InstanceStore(root / "storage", fsync=False))
    migrate(open_database(index_database(root), durable=False))
    accessions = []
    for n in range(7):
        ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), accession=f"A{n}")
        assert ingest.ingest_file(write(ds, root / "in" / f"{n}.dcm"), Source("import"), take=True).ok
        accessions.append(f"A{n}")
    return accessions


def test_unlimited_answer_is_read_page_by_page_on_any_thread(seven_studies, monkeypatch):
    monkeypatch.setattr(search, "PAGE", 2)
    for offset in (0, 1, 6):
        parsed = search.parse("studies", [("offset", str(offset))], {})
        matches, truncated = search.run(parsed)
        assert not truncated
        got: list = []
        # Each step on a fresh thread, as a streaming response may resume anywhere.
        while not got or got[-1] is not None:
            t = threading.Thread(target=lambda it=matches, out=got: out.append(next(it, None)))
            t.start()
            t.join()
        assert [m["AccessionNumber"] for m in got[:-1]] == seven_studies[offset:]


def test_limit_reads_one_more_to_tell_truncation(seven_studies):
    matches, truncated = search.run(search.parse("studies", [("limit", "3"), ("offset", "2")], {}))
    assert [m["AccessionNumber"] for m in matches] == ["A2", "A3", "A4"] and truncated
    matches, truncated = search.run(search.parse("studies", [("limit", "5"), ("offset", "2")], {}))
    assert len(list(matches)) == 5 and not truncated


def test_json_of_a_match(seven_studies):
    (match,) = search.run(search.parse("studies", [("AccessionNumber", "A3")], {}))[0]
    item = search.to_json(match, "STUDY", "http://h/dicom-web")
    assert item["00080050"] == {"vr": "SH", "Value": ["A3"]}
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}
    assert item["00201208"] == {"vr": "IS", "Value": [1]}
    assert item["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert item["00081190"]["Value"] == [f"http://h/dicom-web/studies/{match['StudyInstanceUID']}"]
    assert list(item) == sorted(item)
