"""Remotes by name: C-ECHO up and down, SIGHUP reloading remotes and the ACL, remotes calling back.

One node with ``allowed_calling_aets = ["ME"]`` and these remotes: a DCMTK
storescp (up), a closed port, DCMTK dcmqrscp under a wrong AE title (it
rejects the association), a socket that never answers, and Debian's
Orthanc as the upstream of a ZIP export (its C-STOREs back must pass the
ACL although it is not listed).
"""

from __future__ import annotations

import io
import signal
import socket
import zipfile

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from bench.corpus import make_dataset, write_corpus
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
    storescu,
    wait_until,
)


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    root = tmp_path_factory.mktemp("remotes")
    config = node_config(root / "node", dicom={"allowed_calling_aets": ["ME"]}, storage={"fsync": False})
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the TCP handshake; nobody ever answers
    orthanc = None
    if orthanc_available():
        orthanc = Orthanc(root / "orthanc", modalities={"node": (NODE_AE, config["dicom"]["port"])}).start()
    with StoreSCP(root / "scp").start() as scp, QRSCP(root / "qr").start() as qr:
        config["remotes"] = [
            scp.remote("scp"),
            {"name": "closed", "ae_title": "CLOSED", "host": "127.0.0.1", "port": free_port()},
            {"name": "wrongae", "ae_title": "NOT_UPSTREAM", "host": "127.0.0.1", "port": qr.port},
            {"name": "silent", "ae_title": "SILENT", "host": "127.0.0.1", "port": silent.getsockname()[1]},
        ]
        if orthanc is not None:
            config["remotes"].append(orthanc.remote(accession_prefixes=["OR"]))
        node = RunningNode(root / "node", config).start()
        try:
            yield node, orthanc, root
        finally:
            node.stop()
            silent.close()
            if orthanc is not None:
                orthanc.stop()


def echo(node: RunningNode, name: str, **params) -> httpx.Response:
    return httpx.post(f"{node.url}/remotes/{name}/echo", params=params, timeout=30)


def test_echo_a_remote_that_is_up(peers):
    node, _, _ = peers
    r = echo(node, "scp")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["status"] == 0
    assert body["ae_title"] == "STORESCP" and body["calling_ae_title"] == NODE_AE
    assert 0 < body["round_trip_ms"] <= body["total_ms"] < 5000
    cli = node.cli("echo", "scp")
    assert cli.returncode == 0 and "scp (STORESCP@127.0.0.1:" in cli.stdout and "C-ECHO ok in" in cli.stdout


@pytest.mark.parametrize(
    ("name", "failure", "words"),
    [
        ("closed", "unreachable", "connection refused: nothing listens on 127.0.0.1:"),
        ("wrongae", "refused", "rejected the association from DICOM_NODE: Called AE title not recognised"),
        ("silent", "timeout", "did not answer the association request within 1s"),
    ],
)
def test_echo_names_the_failure(peers, name, failure, words):
    node, _, _ = peers
    r = echo(node, name, timeout=1)
    assert r.status_code == 502, r.text
    body = r.json()
    assert body["ok"] is False and body["failure"] == failure and words in body["error"], body
    assert body["remote"] == name
    cli = node.cli("echo", name, "--timeout", "1")
    assert cli.returncode == 1 and words in cli.stderr


def test_echo_of_an_unknown_remote_or_a_bad_timeout(peers):
    node, _, _ = peers
    r = echo(node, "nope")
    assert (
        r.status_code == 404 and "no remote named 'nope'" in r.json()["error"] and "scp" in r.json()["error"]
    )
    assert echo(node, "scp", timeout="abc").status_code == 400
    assert echo(node, "scp", timeout="0").status_code == 400
    cli = node.cli("echo", "nope")
    assert cli.returncode == 2 and "no remote named 'nope'" in cli.stderr


@pytest.mark.skipif(not orthanc_available(), reason="Orthanc is not installed")
def test_an_upstream_outside_allowed_calling_aets_can_still_send_back(peers, tmp_path):
    node, orthanc, _ = peers
    write_corpus(tmp_path / "src", studies=1, series=1, instances=4, accession_prefix="OR")
    storescu(orthanc.ae_title, orthanc.dicom_port, tmp_path / "src")
    # Orthanc's AE title is not in allowed_calling_aets; a stranger's is not either.
    assert "ORTHANC" not in node.config["dicom"]["allowed_calling_aets"]
    stranger = dcmtk(
        "echoscu", "-aet", "STRANGER", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port), check=False
    )
    assert stranger.returncode != 0
    r = httpx.post(f"{node.url}/accessions/OR00000/zip")
    assert r.status_code == 202, r.text
    wait_until("the archive", lambda: httpx.get(f"{node.url}/accessions/OR00000/zip").status_code != 202, 60)
    r = httpx.get(f"{node.url}/accessions/OR00000/zip")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert len(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == 4


def test_a_refused_c_store_and_stow_part_are_logged_with_their_reason(peers):
    node, _, _ = peers
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds = make_dataset(study_uid="not-a-uid", series_uid=generate_uid())
    ae = AE(ae_title="ME")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert rsp.Status == 0xA900 and "StudyInstanceUID is not a valid UID" in rsp.ErrorComment
    # The association line counts it; a line of its own says why.
    wait_until("the association line", lambda: "association ME from" in node.log())
    assert any("association ME from" in x and "1 failed" in x for x in node.log().splitlines())
    assert (
        " WARNING node.dimse: C-STORE from ME refused with 0xA900 (Data set does not match SOP class): "
        "StudyInstanceUID is not a valid UID: 'not-a-uid'"
    ) in node.log()

    body = b"\r\n--B\r\nContent-Type: application/dicom\r\n\r\nnot dicom at all\r\n--B--"
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'}
    r = httpx.post(f"{node.url}/dicom-web/studies", content=body, headers=headers)
    assert r.status_code == 409
    wait_until("the request line", lambda: "POST /dicom-web/studies -> 409" in node.log())
    (line,) = [x for x in node.log().splitlines() if "POST /dicom-web/studies -> 409" in x]
    assert "refused with 0xC000 (Cannot understand / unable to process): part 1: not a DICOM" in line


def test_sighup_adds_a_remote_and_changes_the_acl_without_a_restart(peers, tmp_path):
    node, _, _ = peers
    write_corpus(tmp_path / "src", studies=1, series=1, instances=3, accession_prefix="HUP")
    storescu(NODE_AE, node.dicom_port, tmp_path / "src", aet="ME")
    pid = node.proc.pid
    with StoreSCP(tmp_path / "late", ae_title="LATE").start() as late:
        move = (
            "movescu", "-S", "-aet", "ME", "-aec", NODE_AE, "-aem", "LATE", "-k", "0008,0052=STUDY",
            "-k", "AccessionNumber=HUP00000", "127.0.0.1", str(node.dicom_port),
        )  # fmt: skip
        before = dcmtk(*move, check=False)
        assert "MoveDestinationUnknown" in before.stderr
        assert not late.files()

        node.config["remotes"].append(late.remote("late", forward=True))
        node.config["dicom"]["allowed_calling_aets"] = ["ME", "STRANGER"]
        node.config["http"]["max_parts"] = 5  # read at start only: reported, not applied
        node.write_config()
        node.proc.send_signal(signal.SIGHUP)
        wait_until("the reload", lambda: "config reloaded" in node.log(), 10)
        line = next(x for x in node.log().splitlines() if "config reloaded" in x)
        assert "remote 'late' added (LATE@127.0.0.1:" in line and "forwarding to: late" in line
        assert "[dicom].allowed_calling_aets [ME] -> [ME, STRANGER]" in line
        assert "[http].max_parts changed" in node.log() and "next restart" in node.log()

        dcmtk(*move)
        wait_until("3 files at the new remote", lambda: len(late.files()) == 3)
        # It forwards, too: a new instance goes there by store-and-forward.
        write_corpus(tmp_path / "new", studies=1, series=1, instances=1, accession_prefix="NEW")
        storescu(NODE_AE, node.dicom_port, tmp_path / "new", aet="ME")
        wait_until("the forwarded instance", lambda: len(late.files()) == 4)
        dcmtk("echoscu", "-aet", "STRANGER", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port))
        assert echo(node, "late").status_code == 200

        # A broken file: logged, and the running config stays.
        good = node.config_path.read_text()
        node.config_path.write_text(good.replace("port = ", "port = 'x' #", 1))
        node.proc.send_signal(signal.SIGHUP)
        wait_until("the failed reload", lambda: "config reload failed" in node.log(), 10)
        assert "keeping the running config: [dicom].port: expected an integer" in node.log()
        assert node.proc.poll() is None and node.proc.pid == pid
        assert echo(node, "late").status_code == 200
        node.config_path.write_text(good)
