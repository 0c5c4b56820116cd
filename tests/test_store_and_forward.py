"""Store-and-forward to remotes with ``forward = true``, against real remotes (DCMTK storescp,
a pynetdicom SCP that refuses, Orthanc)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import MRImageStorage, generate_uid

from bench.corpus import make_dataset, write, write_corpus
from tests.forward_peers import RefusingSCP
from tests.harness import (
    Orthanc,
    StoreSCP,
    dataset_bytes,
    dcmtk,
    free_port,
    orthanc_available,
    storescu_args,
    wait_until,
)


def storescu(node, *paths: Path, aet: str = "MODALITY", background: bool = False):
    args = storescu_args(node.ae_title, node.dicom_port, *paths, aet=aet)
    if background:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return dcmtk(*args)


def sop_uids(paths: list[Path]) -> set[str]:
    """SOP Instance UIDs of the readable files (storescp may still be writing the last one)."""
    found = set()
    for p in paths:
        try:
            found.add(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID))
        except Exception:
            pass
    return found


def remotes(node) -> dict[str, dict]:
    r = httpx.get(f"{node.url}/remotes", headers=node.auth_headers(), timeout=10)
    r.raise_for_status()
    return {item["name"]: item for item in r.json()["remotes"]}


@pytest.fixture
def storescp(tmp_path):
    with StoreSCP(tmp_path / "remote").start() as scp:
        yield scp


def test_received_instances_are_forwarded_byte_identical(node_factory, storescp, tmp_path):
    node = node_factory(remotes=[storescp.remote(forward=True)]).start()
    sent = write_corpus(tmp_path / "corpus", studies=2, series=1, instances=15)
    storescu(node, tmp_path / "corpus")

    # Counted once the remote has answered for each, so every file is complete.
    wait_until("30 instances forwarded", lambda: remotes(node)["storescp"]["forwarded"] == 30)
    assert len(storescp.files()) == 30
    by_uid = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in storescp.files()}
    for path in sent:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(by_uid[uid]) == dataset_bytes(path)

    report = remotes(node)["storescp"]
    assert report["ae_title"] == storescp.ae_title and report["port"] == storescp.port
    assert report["forward"] is True
    assert report["pending"] == 0 and report["failed"] == 0
    assert report["last_success"] is not None and report["next_retry"] is None
    assert node.health()["outbox"] == {"pending": 0, "done": 30, "failed": 0}
    # The kept association is released once idle, with one log line.
    line = f"association DICOM_NODE to {storescp.ae_title}@127.0.0.1:{storescp.port}: 30 forwarded"
    wait_until("the association's log line", lambda: line in node.log())


def test_resent_instances_go_once_more_and_nothing_is_sent_back_to_its_source(node_factory, tmp_path):
    with (
        StoreSCP(tmp_path / "a", ae_title="PACS_A").start() as a,
        StoreSCP(tmp_path / "b", ae_title="PACS_B").start() as b,
    ):
        node = node_factory(remotes=[a.remote("a", forward=True), b.remote("b", forward=True)]).start()
        write_corpus(tmp_path / "corpus", studies=1, instances=5)
        # Sent by PACS_A itself: forwarded to B only.
        storescu(node, tmp_path / "corpus", aet="PACS_A")
        wait_until("5 files at B", lambda: len(b.files()) == 5)
        # The same instances again from a modality: one row per remote, re-armed, not duplicated.
        storescu(node, tmp_path / "corpus")
        wait_until("5 files at A", lambda: len(a.files()) == 5)
        wait_until("all settled", lambda: node.health()["outbox"]["pending"] == 0)
        figures = remotes(node)
        assert figures["a"]["forwarded"] == 5 and figures["b"]["forwarded"] == 5
        assert node.health()["outbox"]["done"] == 10
        assert sop_uids(a.files()) == sop_uids(b.files())


def test_remote_killed_during_the_send_gets_everything_after_it_returns(node_factory, tmp_path):
    folder = tmp_path / "remote"
    scp = StoreSCP(folder).start()
    try:
        node = node_factory(remotes=[scp.remote(forward=True)]).start()
        sent = write_corpus(tmp_path / "corpus", studies=1, instances=60, size="ct")
        pusher = storescu(node, tmp_path / "corpus", background=True)
        wait_until("a first file at the remote", lambda: len(scp.files()) >= 5)
        scp.stop(signal.SIGKILL)  # most likely in the middle of a batch
        assert pusher.wait(120) == 0
        # More while it is down, so that there is a queue whatever the moment of the kill.
        sent += write_corpus(tmp_path / "more", studies=1, instances=10)
        storescu(node, tmp_path / "more")

        wait_until("the outage to be seen", lambda: remotes(node)["storescp"]["next_retry"] is not None)
        report = remotes(node)["storescp"]
        assert report["pending"] >= 10 and report["last_error"]
        assert node.count() == 70

        scp = StoreSCP(folder, port=scp.port).start()
        wait_until("every instance at the remote", lambda: sop_uids(scp.files()) >= sop_uids(sent), 90)
        wait_until("queue drained", lambda: remotes(node)["storescp"]["pending"] == 0)
        assert remotes(node)["storescp"]["failed"] == 0
    finally:
        scp.stop()


def test_queue_survives_a_node_restart_and_drains(node_factory, tmp_path):
    port = free_port()
    node = node_factory(
        remotes=[{"name": "late", "ae_title": "LATE", "host": "127.0.0.1", "port": port, "forward": True}]
    ).start()
    sent = write_corpus(tmp_path / "corpus", studies=1, instances=10)
    storescu(node, tmp_path / "corpus")
    wait_until("the remote to be found down", lambda: remotes(node)["late"]["last_error"] is not None)
    assert remotes(node)["late"]["pending"] == 10
    assert "late" in node.cli("forward").stdout and "10 pending" in node.cli("forward").stdout
    assert node.stop() == 0

    with StoreSCP(tmp_path / "late", ae_title="LATE", port=port).start() as scp:
        node.start()
        wait_until("10 files at the remote", lambda: sop_uids(scp.files()) == sop_uids(sent))
        wait_until("queue drained", lambda: remotes(node)["late"]["pending"] == 0)
        assert remotes(node)["late"]["forwarded"] == 10


def test_imported_and_stow_instances_are_forwarded(node_factory, storescp, tmp_path):
    node = node_factory(remotes=[storescp.remote(forward=True)]).start()
    imported = write_corpus(tmp_path / "corpus", studies=1, instances=4)
    result = node.cli("import", "-q", str(tmp_path / "corpus"))
    assert result.returncode == 0, result.stderr
    # Queued by another process: the worker finds the rows on its next look.
    wait_until("4 files at the remote", lambda: len(storescp.files()) == 4)

    stowed = write_corpus(tmp_path / "stow", studies=1, instances=2)
    body = b"".join(b"\r\n--B\r\nContent-Type: application/dicom\r\n\r\n" + p.read_bytes() for p in stowed)
    r = httpx.post(
        f"{node.url}/dicom-web/studies",
        content=body + b"\r\n--B--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    wait_until("6 files at the remote", lambda: sop_uids(storescp.files()) == sop_uids(imported + stowed))


def test_a_full_remote_is_waited_for_not_given_up(node_factory, tmp_path):
    full = RefusingSCP("FULL", status=0xA700)
    try:
        node = node_factory(remotes=[full.remote("full", forward=True)]).start()
        sent = write_corpus(tmp_path / "corpus", studies=1, instances=3)
        storescu(node, tmp_path / "corpus")
        wait_until("the refusal to be seen", lambda: remotes(node)["full"]["last_error"] is not None)
        report = remotes(node)["full"]
        assert "out of resources" in report["last_error"] and "0xA700" in report["last_error"]
        assert report["pending"] == 3 and report["failed"] == 0 and report["next_retry"] is not None

        full.status = 0x0000  # space freed at the remote
        wait_until("3 instances at the remote", lambda: sorted(full.received) == sorted(sop_uids(sent)))
        wait_until("queue drained", lambda: remotes(node)["full"]["forwarded"] == 3)
    finally:
        full.stop()


def test_a_stop_in_the_middle_of_a_batch_ends_after_the_instance_in_flight(node_factory, tmp_path):
    remote = RefusingSCP("SLOWFWD", status=0xA700)  # full at first: all ten wait, sent in one batch
    try:
        node = node_factory(jobs={"poll_seconds": 0.2}, remotes=[remote.remote("slow", forward=True)]).start()
        write_corpus(tmp_path / "corpus", studies=1, instances=10)
        storescu(node, tmp_path / "corpus")
        wait_until("the refusal to be seen", lambda: remotes(node)["slow"]["last_error"] is not None)
        assert remotes(node)["slow"]["pending"] == 10
        remote.delay, remote.status = 0.7, 0x0000  # room again, but slow: the batch takes 7 s
        wait_until("a first instance at the remote", lambda: len(remote.received) >= 1)
        assert node.stop(timeout=20) == 0
        # Not the rest of the batch (it would outlast the jobs' grace and be cut off with its
        # answers unsaved, to be sent again): the instance in flight, its answer saved, the rest pending.
        assert "still busy" not in node.log()
        count = "SELECT COUNT(*) FROM outbox WHERE remote = ? AND state = ?"
        (done,) = node.index_rows(count, "slow", "done")[0]
        assert done == len(remote.received) < 10
        assert node.index_rows(count, "slow", "pending") == [(10 - done,)]
    finally:
        remote.stop()


def test_permanent_refusals_are_recorded_then_retried_on_request(node_factory, tmp_path):
    refuser = RefusingSCP(status=0xA900)
    try:
        node = node_factory(remotes=[refuser.remote(forward=True)]).start()
        study, series = generate_uid(), generate_uid()
        ct = [
            write(make_dataset(study_uid=study, series_uid=series), tmp_path / f"in/ct{i}.dcm")
            for i in range(3)
        ]
        mr = write(
            make_dataset(study_uid=study, series_uid=series, sop_class_uid=MRImageStorage),
            tmp_path / "in/mr.dcm",
        )
        # Alone, the MR finds no presentation context at all (the association is refused
        # for want of one): a permanent refusal too, not an outage to wait out.
        storescu(node, mr)
        wait_until("the MR refused", lambda: remotes(node)["refuser"]["failed"] == 1)
        assert remotes(node)["refuser"]["next_retry"] is None
        storescu(node, *ct)

        wait_until("4 failed rows", lambda: remotes(node)["refuser"]["failed"] == 4)
        report = remotes(node)["refuser"]
        assert report["pending"] == 0 and report["forwarded"] == 0
        assert report["last_error"]
        assert node.health()["outbox"]["failed"] == 4
        # Refused for good: the association's line is a WARNING (an operator must act).
        wait_until(
            "the association line at WARNING",
            lambda: any(
                " WARNING node.forward: association " in line and "refused" in line
                for line in node.log().splitlines()
            ),
        )

        # The operator fixes the remote, then re-queues: the CT instances go, the MR
        # (no presentation context at that remote) fails again.
        refuser.status = 0x0000
        result = node.cli("forward", "--retry", "refuser")
        assert result.returncode == 0 and "4 failed instance(s) re-queued" in result.stdout
        wait_until("3 CT instances at the remote", lambda: len(refuser.received) == 3)
        wait_until("rows settled", lambda: remotes(node)["refuser"]["failed"] == 1)
        assert sorted(refuser.received) == sorted(sop_uids(ct))
        assert remotes(node)["refuser"]["forwarded"] == 3
        assert str(dcmread(mr).SOPInstanceUID) not in refuser.received

        unknown = node.cli("forward", "--retry", "nope")
        assert unknown.returncode == 2 and "no remote named 'nope'" in unknown.stderr
    finally:
        refuser.stop()


@pytest.mark.skipif(not orthanc_available(), reason="Orthanc not installed")
def test_forward_to_orthanc(node_factory, tmp_path):
    with Orthanc(tmp_path / "orthanc") as orthanc:
        orthanc.start()
        node = node_factory(remotes=[orthanc.remote(forward=True)]).start()
        write_corpus(tmp_path / "corpus", studies=1, instances=6)
        storescu(node, tmp_path / "corpus")

        def held() -> int:
            return len(httpx.get(f"{orthanc.url}/instances", timeout=5).json())

        wait_until("6 instances in Orthanc", lambda: held() == 6)
        wait_until("rows settled", lambda: remotes(node)["orthanc"]["forwarded"] == 6)
