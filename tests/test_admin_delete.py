"""Deleting studies, series and instances: over HTTP and the CLI, and after a crash in the middle.

One node holds three studies sent with storescu; it forwards to a remote
that is down, so every instance has a pending outbox row to be dropped.
Results are checked as a client sees them (QIDO-RS, findscu) and on disk.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from bench.corpus import write_corpus
from node.check import inspect
from node.config import parse
from node.context import open_context
from node.deletion import fingerprint, finish_pending
from node.index.deletion import Target, delete_rows, pending_count
from node.index.models import Instance
from node.ingest import Source
from node.store import InstanceStore
from tests.harness import NODE_AE, REPO, RunningNode, dcmtk, free_port, node_config, storescu, wait_until


class Corpus:
    """The files of each study, by Study Instance UID, and their series."""

    def __init__(self, paths: list[Path]) -> None:
        self.files: dict[str, list[Path]] = {}
        self.series: dict[str, dict[str, list[Path]]] = {}
        self.accession: dict[str, str] = {}
        for path in paths:
            ds = dcmread(path, stop_before_pixels=True)
            self.files.setdefault(ds.StudyInstanceUID, []).append(path)
            self.series.setdefault(ds.StudyInstanceUID, {}).setdefault(ds.SeriesInstanceUID, []).append(path)
            self.accession[ds.StudyInstanceUID] = ds.AccessionNumber
        self.studies = list(self.files)


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    root = tmp_path_factory.mktemp("delete")
    paths = write_corpus(root / "corpus", studies=3, series=2, instances=3)
    down = {"name": "down", "ae_title": "DOWNPACS", "host": "127.0.0.1", "port": free_port(), "forward": True}
    node = RunningNode(root / "node", node_config(root / "node", storage={"fsync": False}, remotes=[down]))
    node.start()
    try:
        storescu(NODE_AE, node.dicom_port, root / "corpus")
        assert node.count() == 18
        yield node, Corpus(paths)
    finally:
        node.stop()


def qido(node: RunningNode, path: str, **params) -> list[dict]:
    r = httpx.get(f"{node.url}/dicom-web/{path}", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def cfind_matches(node: RunningNode, study_uid: str) -> int:
    """How many studies C-FIND (DCMTK findscu) finds with this UID."""
    result = dcmtk(
        "findscu", "-v", "-S", "-aet", "ME", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port),
        "-k", "0008,0052=STUDY", "-k", f"StudyInstanceUID={study_uid}",
    )  # fmt: skip
    return (result.stdout + result.stderr).count("(Pending)")


def study_folder(node: RunningNode, study_uid: str) -> Path:
    return node.storage / study_uid


def outbox_rows(node: RunningNode) -> int:
    return node.index_rows('SELECT COUNT(*) FROM "outbox"')[0][0]


def test_delete_a_study_over_http(held):
    node, corpus = held
    study = corpus.studies[0]
    accession = corpus.accession[study]
    # A prepared archive and pending outbox rows: both must go with the study.
    assert httpx.post(f"{node.url}/accessions/{accession}/zip").status_code in (200, 202)
    wait_until("the archive", lambda: httpx.get(f"{node.url}/accessions/{accession}/zip").status_code == 200)
    archive = node.storage / "zip" / f"{accession}.zip"
    assert archive.is_file()
    wait_until("outbox rows", lambda: outbox_rows(node) == 18)
    assert cfind_matches(node, study) == 1
    assert len(list(study_folder(node, study).rglob("*.dcm"))) == 6

    r = httpx.delete(f"{node.url}/dicom-web/studies/{study}")
    assert r.status_code == 204, r.text
    assert r.content == b""

    assert qido(node, "studies", StudyInstanceUID=study) == []
    assert qido(node, f"studies/{study}/instances") == []
    assert cfind_matches(node, study) == 0
    assert not study_folder(node, study).exists()
    assert not archive.exists()
    assert httpx.get(f"{node.url}/accessions/{accession}/zip").status_code == 404
    assert outbox_rows(node) == 12
    assert node.health()["counts"] == {"patients": 2, "studies": 2, "series": 4, "instances": 12}
    # The other studies are untouched.
    assert {s["0020000D"]["Value"][0] for s in qido(node, "studies")} == set(corpus.studies[1:])
    line = f"DELETE /dicom-web/studies/{study} -> 204"
    wait_until("the log line", lambda: line in node.log())
    (logged,) = [x for x in node.log().splitlines() if line in x]
    assert "deleted study" in logged and "6 instance(s)" in logged
    assert f"dropped 6 outbox row(s) and the export of accession {accession}" in logged

    r = httpx.delete(f"{node.url}/dicom-web/studies/{study}")
    assert r.status_code == 404 and study in r.json()["error"]
    check = node.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_delete_a_series_and_an_instance_over_http(held):
    node, corpus = held
    study, other = corpus.studies[1], corpus.studies[2]
    (series_a, files_a), (series_b, files_b) = corpus.series[study].items()

    # A series is found only under its own study.
    r = httpx.delete(f"{node.url}/dicom-web/studies/{other}/series/{series_a}")
    assert r.status_code == 404 and "no such series" in r.json()["error"]
    assert httpx.delete(f"{node.url}/dicom-web/studies/{study}/series/1.2.3.4").status_code == 404

    assert httpx.delete(f"{node.url}/dicom-web/studies/{study}/series/{series_a}").status_code == 204
    assert [s["0020000E"]["Value"][0] for s in qido(node, f"studies/{study}/series")] == [series_b]
    assert not (study_folder(node, study) / series_a).exists()
    assert len(list((study_folder(node, study) / series_b).glob("*.dcm"))) == 3

    sop = str(dcmread(files_b[0], stop_before_pixels=True).SOPInstanceUID)
    url = f"{node.url}/dicom-web/studies/{study}/series/{series_b}/instances/{sop}"
    assert httpx.delete(url).status_code == 204
    assert httpx.delete(url).status_code == 404
    left = {i["00080018"]["Value"][0] for i in qido(node, f"studies/{study}/series/{series_b}/instances")}
    assert len(left) == 2 and sop not in left
    assert not (study_folder(node, study) / series_b / f"{sop}.dcm").exists()
    assert httpx.get(f"{url}/metadata").status_code == 404
    # The study stays, with what is left.
    (row,) = qido(node, "studies", StudyInstanceUID=study)
    assert row["00201208"]["Value"] == [2]


def test_cli_delete_asks_first(held):
    node, corpus = held
    study = corpus.studies[2]
    r = node.cli("delete", study, input="n\n")
    assert r.returncode == 1
    assert f"study {study}: PATIENT^00002 (PAT00002), 2024-01-03, accession ACC00002" in r.stdout
    assert "6 instances" in r.stdout and "nothing deleted" in r.stdout
    assert len(qido(node, "studies", StudyInstanceUID=study)) == 1

    # No terminal and no --yes: nothing is deleted either.
    assert node.cli("delete", study).returncode == 1
    assert len(qido(node, "studies", StudyInstanceUID=study)) == 1

    r = node.cli("delete", "--yes", study, "1.2.3.999")
    assert r.returncode == 1  # one UID was unknown; the other is deleted all the same
    assert "1.2.3.999: no study, series or instance with this UID" in r.stderr
    assert f"deleted study {study}: 6 instance(s)" in r.stderr
    assert qido(node, "studies", StudyInstanceUID=study) == []
    assert not study_folder(node, study).exists()


CRASH = textwrap.dedent(
    """
    import os, sys
    from functools import partial
    from node.config import load
    from node.context import open_context
    from node.deletion import fingerprint
    from node.index.deletion import Target, delete_rows

    ctx = open_context(load(sys.argv[1]))
    delete_rows([Target("study", sys.argv[2])], partial(fingerprint, ctx.store))
    os._exit(9)  # the process dies after the rows went and before the files did
    """
)


def crash_deleting(node: RunningNode, study: str) -> None:
    r = subprocess.run([sys.executable, "-c", CRASH, str(node.config_path), study], cwd=REPO)
    assert r.returncode == 9
    assert qido(node, "studies", StudyInstanceUID=study) == []


def test_crash_between_rows_and_files_leaves_check_clean(held):
    node, corpus = held
    study = corpus.studies[0]
    storescu(NODE_AE, node.dicom_port, *corpus.files[study])  # stored again after the first test
    assert len(qido(node, "studies", StudyInstanceUID=study)) == 1

    crash_deleting(node, study)
    # The debris a crash leaves: files without rows (which check alone would report).
    assert len(list(study_folder(node, study).rglob("*.dcm"))) == 6

    r = node.cli("check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "finished 7 file removal(s) of an interrupted deletion" in r.stdout  # 6 files, 1 archive
    assert "0 rows without file, 0 files without row" in r.stdout
    assert not study_folder(node, study).exists()
    assert node.cli("check").stdout.startswith("0 rows without file, 0 files without row")


def test_crash_then_restart_finishes_the_deletion(held):
    node, corpus = held
    study = corpus.studies[1]  # what the series test left: 2 instances
    crash_deleting(node, study)
    assert len(list(study_folder(node, study).rglob("*.dcm"))) == 2
    node.restart()
    assert "finished 3 file removal(s) of an interrupted deletion" in node.log()
    assert not study_folder(node, study).exists()
    r = node.cli("check")
    assert r.returncode == 0 and "0 files without row" in r.stdout


def test_an_instance_stored_again_is_not_removed_with_its_deleted_copy(tmp_path):
    """The states a store racing a deletion leaves; the second step must keep the new file."""
    ctx = open_context(parse(node_config(tmp_path, storage={"fsync": False}), tmp_path))
    store: InstanceStore = ctx.store
    paths = write_corpus(tmp_path / "in", studies=1, series=1, instances=2)
    first, second = (ctx.ingest.ingest_file(p, Source("import"), take=False) for p in paths)

    # Stored again (file and row) after its rows were deleted, before its file was removed.
    delete_rows([Target("instance", first.sop_instance_uid)], lambda p: fingerprint(store, p))
    assert ctx.ingest.ingest_file(paths[0], Source("import"), take=False).ok
    # Only the file was replaced so far (its row is about to be written).
    delete_rows([Target("instance", second.sop_instance_uid)], lambda p: fingerprint(store, p))
    relative = store.relative_path(second.study_uid, second.series_uid, second.sop_instance_uid)
    staged = store.temp_path()
    staged.write_bytes(paths[1].read_bytes())
    store.commit(staged, relative)

    assert pending_count() == 4  # two files, and the archive of their accession for each deletion
    assert finish_pending(ctx) == 4
    assert pending_count() == 0
    assert store.absolute(relative).is_file()
    kept = Instance.get(Instance.sop_uid == first.sop_instance_uid)
    assert store.absolute(kept.path).read_bytes() == paths[0].read_bytes()
    report = inspect(ctx)
    assert report.missing_files == [] and report.stray_files == [relative]
