"""ZIP export per accession: local studies, read-through retrieval from a real upstream PACS.

Upstreams are DCMTK ``dcmqrscp`` (C-MOVE to the node, or C-GET) and Debian's
Orthanc, started on free loopback ports and holding studies the node does
not have.  Every archive is checked entry by entry against the files that
were sent upstream.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write, write_corpus
from node.index.jobs import export_state
from tests import harness
from tests.harness import NODE_AE, QRSCP, Orthanc, free_port, orthanc_available


def storescu(port: int, ae: str, *paths: Path) -> None:
    harness.storescu(ae, port, *paths)


def wait_done(node, accession: str, timeout: float = 60.0) -> httpx.Response:
    """GET the archive until it is no longer being prepared (202)."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{node.url}/accessions/{accession}/zip", timeout=30)
        if r.status_code != 202 or time.monotonic() > deadline:
            return r
        assert r.json()["state"] in ("queued", "retrieving", "zipping")
        time.sleep(0.05)


def assert_archive(node, content: bytes, accession: str, sources: list[Path]) -> zipfile.ZipFile:
    """The archive holds every instance of *sources* once, under ``{accession}/``.

    Each entry is byte-identical to the file the node stored (as received;
    an upstream may have sent another transfer syntax than it was given), and
    holds the same instance (UID and pixel data) as the source file.
    """
    zf = zipfile.ZipFile(io.BytesIO(content))
    assert zf.testzip() is None
    names = zf.namelist()
    assert all(n.startswith(f"{accession}/") and n.endswith(".dcm") and n.count("/") == 2 for n in names)
    want = {}
    for path in sources:
        ds = dcmread(path)
        want[ds.SOPInstanceUID] = ds.PixelData
    got = {}
    for name in names:
        data = zf.read(name)
        ds = dcmread(io.BytesIO(data))
        got[ds.SOPInstanceUID] = ds.PixelData
        stored = node.storage / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert data == stored.read_bytes(), name
        assert name.endswith(f"-{ds.SOPInstanceUID}.dcm")
    assert len(names) == len(sources)
    assert got == want
    return zf


def export_files(node) -> list[Path]:
    root = Path(node.config["export"]["path"])
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def job_rows(node, accession: str) -> list[tuple]:
    """(state, failure) of the accession's export job rows, in the export's words for the state."""
    sql = "SELECT state, phase, failure FROM job WHERE kind = 'export' AND key = ?"
    rows = node.index_rows(sql, accession)
    return [(export_state(state, phase), failure) for state, phase, failure in rows]


def study(root: Path, accession: str, n: int, *, series: int = 2) -> list[Path]:
    return write_corpus(root, studies=1, series=series, instances=n // series, accession_prefix=accession)


# -- local studies --------------------------------------------------------------


def test_local_study_archive_cache_rebuild_and_ranges(node_factory, tmp_path):
    node = node_factory(export={"compression": 3}).start()
    files = study(tmp_path / "src", "LOC", 6)  # accession LOC00000
    storescu(node.dicom_port, node.ae_title, tmp_path / "src")

    r = httpx.post(f"{node.url}/accessions/LOC00000/zip")
    assert r.status_code in (200, 202), r.text
    assert r.json()["remote"] is None
    r = wait_done(node, "LOC00000")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-length"] == str(len(r.content))
    assert 'filename="LOC00000.zip"' in r.headers["content-disposition"]
    zf = assert_archive(node, r.content, "LOC00000", files)
    assert {n.split("/")[1] for n in zf.namelist()} == {"0001-CT", "0002-CT"}
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    first = r.content

    # Cached: POST says ready, GET serves the same bytes, ranges work.
    r = httpx.post(f"{node.url}/accessions/LOC00000/zip")
    assert r.status_code == 200 and r.json()["state"] == "ready" and r.json()["instances"] == 6
    assert httpx.get(f"{node.url}/accessions/LOC00000/zip").content == first
    r = httpx.get(f"{node.url}/accessions/LOC00000/zip", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == first[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(first)}"

    # A new instance in the study: the next POST rebuilds and includes it.
    ds = dcmread(files[0])
    extra = write(
        make_dataset(
            study_uid=ds.StudyInstanceUID,
            series_uid=ds.SeriesInstanceUID,
            accession="LOC00000",
            patient_id=ds.PatientID,
            instance_number=99,
        ),
        tmp_path / "extra" / "new.dcm",
    )
    storescu(node.dicom_port, node.ae_title, extra)
    r = httpx.post(f"{node.url}/accessions/LOC00000/zip")
    assert r.status_code == 202, r.text
    r = wait_done(node, "LOC00000")
    assert r.status_code == 200
    assert_archive(node, r.content, "LOC00000", [*files, extra])
    assert r.content != first


def test_get_before_create_prepares_a_local_study(node_factory, tmp_path):
    """Medialog's pair in either order: get_studies_zip first starts the job (202), then serves it."""
    node = node_factory().start()
    files = study(tmp_path / "src", "ORD", 3)
    storescu(node.dicom_port, node.ae_title, tmp_path / "src")
    r = httpx.get(f"{node.url}/api/get_studies_zip", params={"AccessionNumber": "ORD00000"})
    assert r.status_code == 202, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["state"] in ("queued", "zipping", "ready")
    r = wait_done(node, "ORD00000")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert_archive(node, r.content, "ORD00000", files)
    # Not held here (and no remote to ask): still 404, never an empty archive.
    r = httpx.get(f"{node.url}/api/get_studies_zip", params={"AccessionNumber": "ORD99"})
    assert r.status_code == 404


def test_unknown_accession_and_path_tricks(node_factory, tmp_path):
    node = node_factory().start()
    outside = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "storage" not in p.parts)

    r = httpx.post(f"{node.url}/accessions/NOPE1/zip")
    assert r.status_code == 404
    assert "NOPE1" in r.json()["error"]
    r = httpx.get(f"{node.url}/accessions/NOPE1/zip")
    assert r.status_code == 404 and "NOPE1" in r.json()["error"]
    r = httpx.get(f"{node.url}/api/get_studies_zip", params={"AccessionNumber": "NOPE1"})
    assert r.status_code == 404

    tricks = {
        "/accessions/..%2F..%2Fetc/zip": "'/'",
        "/accessions/a%2Fb/zip": "'/'",
        "/accessions/a%5Cb/zip": "backslash",
        "/accessions/%2E%2E/zip": "not acceptable",
        "/accessions/ABCDEFGHIJKLMNOPQ/zip": "longer than 16",
        "/accessions/AB%0ACD/zip": "control character",
        "/accessions/AB%00CD/zip": "control character",
        "/accessions/CN*/zip": "'*'",
        "/accessions/%20%20/zip": "empty",
    }
    for path, reason in tricks.items():
        for method in ("POST", "GET"):
            r = httpx.request(method, node.url + path)
            assert r.status_code == 400, (path, r.status_code, r.text)
            assert reason in r.json()["error"], (path, r.json())
    for params in ({"AccessionNumber": "../../x"}, {"AccessionNumber": "a\\b"}, {}):
        r = httpx.post(f"{node.url}/api/create_studies_zip", params=params)
        assert r.status_code == 400, (params, r.text)
    assert export_files(node) == []
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and "storage" not in p.parts) == outside
    assert httpx.get(f"{node.url}/health").status_code == 200


def test_eviction_by_age_and_total_size(node_factory, tmp_path):
    # Each archive is ~13 KB (4 tiny instances, stored): two fit, three do not.
    node = node_factory(export={"compression": 0, "max_total_bytes": 30_000, "max_age_days": 1}).start()
    for acc in ("EVA", "EVB", "EVC", "EVD"):
        study(tmp_path / acc, acc, 4)
        storescu(node.dicom_port, node.ae_title, tmp_path / acc)

    def build(accession: str) -> None:
        assert httpx.post(f"{node.url}/accessions/{accession}/zip").status_code in (200, 202)
        assert wait_done(node, accession).status_code == 200

    build("EVA00000")
    build("EVB00000")
    assert [p.name for p in export_files(node)] == ["EVA00000.zip", "EVB00000.zip"]
    # EVA's archive is two days old: the next build evicts it (by age), and its job with it.
    old = time.time() - 2 * 86400
    os.utime(export_files(node)[0], (old, old))
    build("EVC00000")
    assert [p.name for p in export_files(node)] == ["EVB00000.zip", "EVC00000.zip"]
    assert job_rows(node, "EVA00000") == []
    # Three do not fit: the oldest (EVB) goes.
    build("EVD00000")
    assert [p.name for p in export_files(node)] == ["EVC00000.zip", "EVD00000.zip"]
    assert job_rows(node, "EVB00000") == []
    # Held here but no longer prepared: a GET prepares it again (202), as for one never prepared.
    assert httpx.get(f"{node.url}/accessions/EVB00000/zip").status_code == 202


# -- read-through retrieval from dcmqrscp ---------------------------------------


@pytest.fixture
def upstream(tmp_path):
    """dcmqrscp holding accessions CN00000 (30 instances) and CN00001 (4), the node as a move destination."""
    node_port = free_port()
    qr = QRSCP(tmp_path / "qr", peers=((NODE_AE, node_port),)).start()
    files = write_corpus(tmp_path / "src", studies=2, series=3, instances=10, accession_prefix="CN")
    qr.load(tmp_path / "src")
    qr.node_port = node_port
    qr.files = {
        "CN00000": [p for p in files if p.parent.name == "study00000"],
        "CN00001": [p for p in files if p.parent.name == "study00001"],
    }
    yield qr
    qr.stop()


def upstream_node(node_factory, qr, retrieve: str = "move", **export):
    return node_factory(
        dicom={"port": qr.node_port},
        export={"compression": 1, **export},
        remotes=[qr.remote(accession_prefixes=["CN"], retrieve=retrieve)],
    ).start()


@pytest.mark.parametrize("retrieve", ["move", "get"])
def test_retrieve_from_dcmqrscp_then_serve_from_cache(node_factory, upstream, retrieve):
    node = upstream_node(node_factory, upstream, retrieve)
    r = httpx.post(f"{node.url}/accessions/CN00000/zip")
    assert r.status_code == 202, r.text
    assert r.json()["remote"] == "upstream"
    r = wait_done(node, "CN00000")
    assert r.status_code == 200, r.text
    assert_archive(node, r.content, "CN00000", upstream.files["CN00000"])
    assert node.count() == 30  # the study is now held by the node too
    job = httpx.post(f"{node.url}/accessions/CN00000/zip").json()
    assert job["state"] == "ready" and job["received"] == 30 and job["instances"] == 30

    # The upstream is gone: the cached archive is still served, byte for byte.
    upstream.stop()
    again = httpx.get(f"{node.url}/api/get_studies_zip", params={"AccessionNumber": "CN00000"})
    assert again.status_code == 200 and again.content == r.content


def test_medialog_aliases_unknown_and_remote_down(node_factory, upstream):
    node = upstream_node(node_factory, upstream)
    r = httpx.get(f"{node.url}/api/create_studies_zip", params={"AccessionNumber": "CN00001"})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while (
        r := httpx.get(f"{node.url}/api/get_studies_zip", params={"AccessionNumber": "CN00001"})
    ).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.status_code == 200
    assert_archive(node, r.content, "CN00001", upstream.files["CN00001"])

    # Matches the prefix, but the upstream has no such study: 404, no archive, no job.
    r = httpx.post(f"{node.url}/api/create_studies_zip", params={"AccessionNumber": "CN404"})
    assert r.status_code == 404
    assert "CN404" in r.json()["error"] and "upstream" in r.json()["error"]
    assert httpx.get(f"{node.url}/accessions/CN404/zip").status_code == 404
    assert job_rows(node, "CN404") == []

    # Upstream down: the job fails, naming the remote.
    upstream.stop()
    r = httpx.post(f"{node.url}/accessions/CN00000/zip")
    assert r.status_code == 502, r.text
    job = r.json()
    assert job["state"] == "failed" and job["failure"] == "remote"
    assert "'upstream'" in job["message"] and f":{upstream.port}" in job["message"]
    r = httpx.get(f"{node.url}/accessions/CN00000/zip")
    assert r.status_code == 502 and r.json()["state"] == "failed"
    assert [p.name for p in export_files(node)] == ["CN00001.zip"]


def test_upstream_refuses_the_move(node_factory, tmp_path):
    """dcmqrscp does not know the node as a move destination: C-MOVE fails with 0xA801."""
    node_port = free_port()
    qr = QRSCP(tmp_path / "qr", peers=()).start()
    try:
        write_corpus(tmp_path / "src", studies=1, series=1, instances=2, accession_prefix="CN")
        qr.load(tmp_path / "src")
        node = node_factory(dicom={"port": node_port}, remotes=[qr.remote(accession_prefixes=["CN"])]).start()
        assert httpx.post(f"{node.url}/accessions/CN00000/zip").status_code == 202
        r = wait_done(node, "CN00000")
        assert r.status_code == 502, r.text
        job = r.json()
        assert job["state"] == "failed"
        assert "'upstream'" in job["message"] and "C-MOVE" in job["message"] and "0xA801" in job["message"]
        assert export_files(node) == []
    finally:
        qr.stop()


def test_partial_retrieval_fails_with_counts_and_no_archive(node_factory, tmp_path):
    """One instance of the upstream study is refused by the node (a 70-character UID): never a short ZIP."""
    node_port = free_port()
    qr = QRSCP(tmp_path / "qr", peers=((NODE_AE, node_port),)).start()
    try:
        study_uid, series_uid = generate_uid(), generate_uid()
        good = write(
            make_dataset(study_uid=study_uid, series_uid=series_uid, accession="CN7"), tmp_path / "a.dcm"
        )
        with pytest.warns(UserWarning, match="maximum length"):
            bad = make_dataset(study_uid=study_uid, series_uid="1.2." + "9" * 70, accession="CN7")
            write(bad, tmp_path / "b.dcm")
        qr.load(good, tmp_path / "b.dcm")
        node = node_factory(dicom={"port": node_port}, remotes=[qr.remote(accession_prefixes=["CN"])]).start()
        for _ in range(2):  # again: the one instance that arrived is not archived as if complete
            assert httpx.post(f"{node.url}/accessions/CN7/zip").status_code == 202
            r = wait_done(node, "CN7")
            assert r.status_code == 502, r.text
            job = r.json()
            assert job["state"] == "failed" and job["failure"] == "partial"
            assert "retrieved 1 of 2 instances" in job["message"] and "0xB000" in job["message"]
            assert "'upstream'" in job["message"]
            assert export_files(node) == []
    finally:
        qr.stop()


def test_two_concurrent_posts_share_one_job(node_factory, upstream):
    node = upstream_node(node_factory, upstream)
    barrier = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def post() -> None:
        barrier.wait()
        answers.append(httpx.post(f"{node.url}/accessions/CN00000/zip", timeout=30))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) in ([202, 202], [200, 202])
    assert answers[0].json()["created_at"] == answers[1].json()["created_at"]
    assert wait_done(node, "CN00000").status_code == 200
    assert len(job_rows(node, "CN00000")) == 1
    assert node.log().count("export CN00000 ready") == 1
    assert node.log().count("association UPSTREAM") == 1  # one C-MOVE's arrivals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_job_resumes_after_restart(node_factory, tmp_path, sig):
    node_port = free_port()
    qr = QRSCP(tmp_path / "qr", peers=((NODE_AE, node_port),)).start()
    try:
        files = write_corpus(tmp_path / "src", studies=1, series=2, instances=60, accession_prefix="CN")
        qr.load(tmp_path / "src")
        node = node_factory(dicom={"port": node_port}, remotes=[qr.remote(accession_prefixes=["CN"])]).start()
        assert httpx.post(f"{node.url}/accessions/CN00000/zip").status_code == 202
        node.proc.send_signal(sig)
        code = node.proc.wait(30)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        (state, failure) = job_rows(node, "CN00000")[0]
        assert state in ("queued", "retrieving", "zipping"), (state, failure)
        node.start()
        r = wait_done(node, "CN00000")
        assert r.status_code == 200, r.text
        assert_archive(node, r.content, "CN00000", files)
        assert "resuming 1 unfinished export job" in node.log()
    finally:
        qr.stop()


# -- Orthanc as the upstream ------------------------------------------------------


@pytest.mark.skipif(not orthanc_available(), reason="Orthanc is not installed")
def test_retrieve_from_orthanc(node_factory, tmp_path):
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"node": (NODE_AE, node_port)}).start()
    try:
        files = write_corpus(tmp_path / "src", studies=1, series=2, instances=5, accession_prefix="PL")
        storescu(orthanc.dicom_port, orthanc.ae_title, tmp_path / "src")
        node = node_factory(
            dicom={"port": node_port}, remotes=[orthanc.remote(accession_prefixes=["PL"])]
        ).start()
        r = httpx.post(f"{node.url}/accessions/PL00000/zip")
        assert r.status_code == 202, r.text
        assert r.json()["expected"] == 10  # Orthanc answers NumberOfStudyRelatedInstances
        r = wait_done(node, "PL00000")
        assert r.status_code == 200, r.text
        assert_archive(node, r.content, "PL00000", files)
        orthanc.stop()
        assert httpx.get(f"{node.url}/accessions/PL00000/zip").content == r.content
    finally:
        orthanc.stop()


def test_unzip_accepts_the_served_archive(node_factory, tmp_path):
    node = node_factory(export={"compression": 0}).start()
    study(tmp_path / "src", "UZ", 4)
    storescu(node.dicom_port, node.ae_title, tmp_path / "src")
    assert httpx.post(f"{node.url}/accessions/UZ00000/zip").status_code in (200, 202)
    r = wait_done(node, "UZ00000")
    assert r.status_code == 200
    archive = tmp_path / "UZ00000.zip"
    archive.write_bytes(r.content)
    run = subprocess.run(["unzip", "-t", str(archive)], capture_output=True, text=True)
    assert run.returncode == 0 and "No errors detected" in run.stdout, run.stdout
