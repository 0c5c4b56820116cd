"""Read-through retrieval on a miss (issue 12 items 3 and 5): WADO-RS, C-MOVE and C-GET of studies
held only upstream, served as they arrive, kept afterwards.

One node for the module, with two read-through upstreams started here:
Debian's Orthanc (which holds most studies) and DCMTK's dcmqrscp (which
holds a study one of whose files was removed behind its back, so that it
cannot send that instance).  Each test asks for a study the node has never
seen, so every request is a miss; the last tests stop Orthanc and ask again
(the tripwire: what was retrieved is served locally, what was not is a 502
naming the remote).
"""

from __future__ import annotations

import io
import struct
import threading
from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from bench.corpus import write_corpus
from tests.harness import (
    NODE_AE,
    QRSCP,
    Orthanc,
    RunningNode,
    StoreSCP,
    dcmtk,
    free_port,
    node_config,
    orthanc_available,
    split_multipart,
    storescu,
    wait_until,
)


class GatedPACS:
    """A pynetdicom Q/R SCP holding one study: its C-MOVE sends the first instance, then waits for *gate*.

    It proves that the node serves the first instance before the last has
    come in: the test reads the first part while the rest is held back.
    """

    ae_title = "GATED"

    def __init__(self, files: list[Path], node_port: int) -> None:
        self.port = free_port()
        self.gate = threading.Event()
        self.datasets = [dcmread(f) for f in files]
        self.study_uid = str(self.datasets[0].StudyInstanceUID)
        self.node_port = node_port
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_FIND, self._find), (evt.EVT_C_MOVE, self._move)],
        )

    def _find(self, event):
        if str(event.identifier.get("StudyInstanceUID", "")) != self.study_uid:
            return
        answer = Dataset()
        answer.QueryRetrieveLevel = "STUDY"
        answer.StudyInstanceUID = self.study_uid
        answer.NumberOfStudyRelatedInstances = len(self.datasets)
        yield 0xFF00, answer

    def _move(self, event):
        yield "127.0.0.1", self.node_port
        yield len(self.datasets)
        for n, ds in enumerate(self.datasets):
            if n == 1:
                self.gate.wait(30)
            yield 0xFF00, ds

    def remote(self) -> dict:
        return {"name": "gated", "ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port}


pytestmark = pytest.mark.skipif(not orthanc_available(), reason="Orthanc is not installed")

STUDIES = ("wado", "metadata", "frames", "move", "get", "shared", "instance", "rendered")


def _sop(data: bytes) -> str:
    return str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def data_set(data: bytes) -> bytes:
    """A Part-10 body's encoded data set (the file meta says who wrote the file: it differs by design)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (meta_len,) = struct.unpack("<I", data[140:144])
    return data[144 + meta_len :]


def by_sop(response: httpx.Response) -> dict[str, bytes]:
    """The data sets of a multipart response by SOP Instance UID."""
    return {_sop(body): data_set(body) for _, body in split_multipart(response)}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_retrieve")
    config = node_config(root / "node", storage={"fsync": False})
    node_port = config["dicom"]["port"]
    orthanc = Orthanc(root / "orthanc", modalities={"node": (NODE_AE, node_port)}).start()
    qrscp = QRSCP(root / "qrscp", peers=((NODE_AE, node_port),)).start()
    storescp = StoreSCP(root / "storescp").start()
    node = None
    gated = None
    try:
        studies: dict[str, dict[str, Path]] = {}
        for name in STUDIES:
            files = write_corpus(
                root / "src" / name, studies=1, series=2, instances=3, accession_prefix=name[:6]
            )
            studies[name] = {str(dcmread(f).SOPInstanceUID): f for f in files}
            storescu(orthanc.ae_title, orthanc.dicom_port, root / "src" / name)
        # A study dcmqrscp holds but one of whose files it has lost: it cannot send that instance.
        files = write_corpus(
            root / "src" / "partial", studies=1, series=1, instances=3, accession_prefix="PART"
        )
        qrscp.load(root / "src" / "partial")
        lost_file = next(p for p in (qrscp.root / "db").rglob("*") if p.is_file() and p.name != "index.dat")
        lost = str(dcmread(lost_file, stop_before_pixels=True).SOPInstanceUID)
        lost_file.unlink()
        studies["partial"] = {str(dcmread(f).SOPInstanceUID): f for f in files}
        gated_files = write_corpus(
            root / "src" / "gated", studies=1, series=1, instances=3, accession_prefix="GATE"
        )
        gated = GatedPACS(gated_files, node_port)
        config["remotes"] = [
            orthanc.remote(read_through=True),
            qrscp.remote(read_through=True),
            {**gated.remote(), "read_through": True},
            storescp.remote(),
        ]
        node = RunningNode(root / "node", config).start()
        yield {
            "node": node,
            "orthanc": orthanc,
            "qrscp": qrscp,
            "storescp": storescp,
            "gated": gated,
            "studies": studies,
            "lost": lost,
            "root": root,
        }
    finally:
        # Started peers are stopped even when the node (or a later peer) did not start.
        if node is not None:
            node.stop()
        for peer in (orthanc, qrscp, storescp):
            peer.stop()
        if gated is not None:
            gated.gate.set()
            gated.server.shutdown()


def study_uid(env, name: str) -> str:
    return str(dcmread(next(iter(env["studies"][name].values()))).StudyInstanceUID)


def upstream_bytes(env, uid: str) -> dict[str, bytes]:
    """What Orthanc holds of the study, by SOP Instance UID (its own WADO-RS)."""
    r = httpx.get(f"{env['orthanc'].url}/dicom-web/studies/{uid}", timeout=30)
    assert r.status_code == 200, r.text
    return by_sop(r)


def wado(env, path: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{env['node'].url}/dicom-web/{path}", timeout=60, **kwargs)


def retrieve_jobs(env, uid: str) -> list[dict]:
    r = httpx.get(f"{env['node'].url}/jobs", params={"kind": "retrieve"}, timeout=10)
    assert r.status_code == 200, r.text
    return [j for j in r.json()["jobs"] if j["key"] == uid]


def test_wado_study_miss_serves_every_instance_as_upstream_holds_it(env):
    uid = study_uid(env, "wado")
    r = wado(env, f"studies/{uid}")
    assert r.status_code == 200, r.text
    assert "chunked" in r.headers.get("transfer-encoding", "")  # streamed, not gathered first
    got = by_sop(r)
    assert got == upstream_bytes(env, uid)
    assert set(got) == set(env["studies"]["wado"])
    (job,) = retrieve_jobs(env, uid)
    assert job["state"] in ("running", "done")
    wait_until("the retrieval to end", lambda: retrieve_jobs(env, uid)[0]["state"] == "done", 30)
    job = retrieve_jobs(env, uid)[0]
    assert job["progress"]["done"] == 6 and job["progress"]["total"] == 6
    assert job["details"]["remote"] == "orthanc"


def first_part_whole(body: bytes) -> bool:
    """Whether a multipart body so far holds its first part whole (by the part's Content-Length)."""
    head, sep, rest = body.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return len(rest) >= length


def test_the_first_instance_goes_out_before_the_last_has_come_in(env):
    gated: GatedPACS = env["gated"]
    url = f"{env['node'].url}/dicom-web/studies/{gated.study_uid}"
    with httpx.stream("GET", url, timeout=60) as r:
        assert r.status_code == 200
        boundary = ("\r\n--" + r.headers["content-type"].split("boundary=")[1]).encode()
        got = b""
        chunks = r.iter_raw()
        while not first_part_whole(got):
            got += next(chunks)
        # The upstream holds the rest back until now: the node is still retrieving.
        (job,) = retrieve_jobs(env, gated.study_uid)
        assert job["state"] == "running" and job["progress"]["total"] == 3
        gated.gate.set()
        for chunk in chunks:
            got += chunk
    parts = got.split(boundary[2:])[1:-1]
    assert len(parts) == 3


def test_wado_metadata_and_frames_miss(env):
    uid = study_uid(env, "metadata")
    r = wado(env, f"studies/{uid}/metadata")
    assert r.status_code == 200, r.text
    items = r.json()
    assert {i["00080018"]["Value"][0] for i in items} == set(env["studies"]["metadata"])

    path = next(iter(env["studies"]["frames"].values()))
    ds = dcmread(path)
    frame_path = f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    octets = {"Accept": "multipart/related; type=application/octet-stream"}
    r = wado(env, f"{frame_path}/frames/1", headers=octets)
    assert r.status_code == 200, r.text
    ((_, frame),) = split_multipart(r)
    assert frame == ds.PixelData
    # The instance level alone: served once that instance is in, whatever the rest of the study does.
    uid = study_uid(env, "instance")
    one = dcmread(next(iter(env["studies"]["instance"].values())))
    r = wado(env, f"studies/{uid}/series/{one.SeriesInstanceUID}/instances/{one.SOPInstanceUID}")
    assert r.status_code == 200, r.text
    assert by_sop(r) == {str(one.SOPInstanceUID): upstream_bytes(env, uid)[str(one.SOPInstanceUID)]}


def test_rendered_miss_is_retrieved_and_a_thumbnail_never_starts_a_retrieval(env):
    from PIL import Image

    uid = study_uid(env, "rendered")
    # A study list shows thumbnails of upstream-only studies too: they must not retrieve each one.
    r = wado(env, f"studies/{uid}/thumbnail")
    assert r.status_code == 404, r.text
    assert retrieve_jobs(env, uid) == []
    one = dcmread(next(iter(env["studies"]["rendered"].values())))
    path = f"studies/{uid}/series/{one.SeriesInstanceUID}/instances/{one.SOPInstanceUID}"
    r = wado(env, f"{path}/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.size == (one.Columns, one.Rows)
    assert image.getextrema() != (0, 0)  # not blank
    assert len(retrieve_jobs(env, uid)) == 1
    # Once retrieved, the study's thumbnail is served from what is held.
    wait_until("the retrieval to end", lambda: retrieve_jobs(env, uid)[0]["state"] == "done", 30)
    r = wado(env, f"studies/{uid}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text


def test_movescu_of_a_miss_delivers_every_instance(env):
    uid = study_uid(env, "move")
    storescp = env["storescp"]
    before = set(storescp.files())
    dcmtk(
        "movescu", "-S", "-aet", "ME", "-aec", NODE_AE, "-aem", storescp.ae_title,
        "-k", "0008,0052=STUDY", "-k", f"StudyInstanceUID={uid}", "127.0.0.1", str(env["node"].dicom_port),
    )  # fmt: skip
    moved = [p for p in storescp.files() if p not in before]
    got = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in moved}
    assert got == set(env["studies"]["move"])
    assert f"C-MOVE of study {uid}: not held" in env["node"].log()


def test_getscu_of_a_miss_delivers_every_instance(env, tmp_path):
    uid = study_uid(env, "get")
    dcmtk(
        "getscu", "-aet", "ME", "-aec", NODE_AE, "-k", "0008,0052=STUDY", "-k", f"StudyInstanceUID={uid}",
        "-od", str(tmp_path), "127.0.0.1", str(env["node"].dicom_port),
    )  # fmt: skip
    upstream = upstream_bytes(env, uid)
    got = {}
    for path in tmp_path.iterdir():
        got[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    assert set(got) == set(upstream) == set(env["studies"]["get"])


def test_concurrent_requests_share_one_retrieval(env):
    uid = study_uid(env, "shared")
    results: list[httpx.Response] = []

    def ask() -> None:
        results.append(wado(env, f"studies/{uid}"))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200]
    upstream = upstream_bytes(env, uid)
    for r in results:
        assert by_sop(r) == upstream
    jobs = retrieve_jobs(env, uid)
    assert len(jobs) == 1 and jobs[0]["attempts"] == 1
    assert env["node"].log().count(f"study {uid} not held: retrieving it") == 1


def test_partial_retrieval_is_a_failure_with_counts(env):
    uid = study_uid(env, "partial")
    lost = env["lost"]
    # WADO: the instances that came go out, then the body is cut: the client sees an error.
    with pytest.raises(httpx.RemoteProtocolError):
        wado(env, f"studies/{uid}")
    # dicomweb-client (requests) too, on a second try (the failed retrieval is attempted again).
    client = DICOMwebClient(url=env["node"].url + "/dicom-web")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.retrieve_study(uid)
    (job,) = retrieve_jobs(env, uid)
    assert job["state"] == "failed" and job["failure"] == "partial"
    assert "retrieved 2 of 3 instances" in job["message"], job["message"]
    assert job["details"]["remote"] == "upstream"
    # C-MOVE: Warning 0xB000 with the counts and the Failed SOP Instance UID List (movescu prints it).
    storescp = env["storescp"]
    result = dcmtk(
        "movescu", "-d", "-S", "-aet", "ME", "-aec", NODE_AE, "-aem", storescp.ae_title,
        "-k", "0008,0052=STUDY", "-k", f"StudyInstanceUID={uid}", "127.0.0.1", str(env["node"].dicom_port),
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "0xb000" in output.lower(), output
    assert lost in output, output
    assert "C-MOVE from ME to STORESCP: 0xB000: 2 completed, 1 failed" in env["node"].log()


def test_tripwire_retrieved_studies_are_served_locally_once_upstream_is_down(env, tmp_path):
    """Runs last: stops Orthanc.  What was retrieved is served from here; a miss is a 502 naming it."""
    uid = study_uid(env, "wado")
    expected = upstream_bytes(env, uid)
    env["orthanc"].stop()
    r = wado(env, f"studies/{uid}")
    assert r.status_code == 200, r.text
    assert by_sop(r) == expected
    dcmtk(
        "getscu", "-aet", "ME", "-aec", NODE_AE, "-k", "0008,0052=STUDY",
        "-k", f"StudyInstanceUID={study_uid(env, 'move')}", "-od", str(tmp_path), "127.0.0.1",
        str(env["node"].dicom_port),
    )  # fmt: skip
    assert len(list(tmp_path.iterdir())) == 6
    # A study held nowhere reachable: dcmqrscp has none, Orthanc is down.
    r = wado(env, "studies/1.2.826.0.1.3680043.8.498.999999")
    assert r.status_code == 502, r.text
    assert "'orthanc'" in r.json()["error"], r.text
    assert env["node"].health()["status"] in ("ok", "degraded")
