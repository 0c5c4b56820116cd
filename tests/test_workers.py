"""Several worker processes on one pair of ports (``[server].workers``), and two nodes on one index.

One node with two workers serves the whole module (the SIGTERM test, which
stops it, runs last); the two-node test has its own pair.  Everything is
seen from outside: DCMTK and pynetdicom as peers, HTTP, the index rows, the
node's log.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time

import httpx
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from bench.corpus import write_corpus
from tests.harness import (
    RunningNode,
    StoreSCP,
    dataset_bytes,
    dcmtk,
    node_config,
    storescu_args,
    twin_config,
    wait_until,
)

MAX_ASSOCIATIONS = 4


def worker_pids(node: RunningNode) -> list[int]:
    """The pids of the node's worker processes (the supervisor's children)."""
    assert node.proc is not None
    out = subprocess.run(["ps", "--ppid", str(node.proc.pid), "-o", "pid="], capture_output=True, text=True)
    return sorted(int(p) for p in out.stdout.split())


def echo(node: RunningNode) -> None:
    dcmtk("echoscu", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port), timeout=30)


def received_total(node: RunningNode) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    return sum(
        float(m.group(2))
        for m in re.finditer(r"^dicom_node_instances_received_total\{(.*)\} (\S+)$", text, re.M)
        if 'door="dimse"' in m.group(1)
    )


def forwarded(node: RunningNode, name: str) -> int:
    remotes = httpx.get(f"{node.url}/remotes", timeout=10).json()["remotes"]
    return next(r for r in remotes if r["name"] == name)["forwarded"]


def instance_rows(node: RunningNode) -> tuple[int, int]:
    return node.index_rows("SELECT count(*), count(DISTINCT sop_uid) FROM instance")[0]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    scp = StoreSCP(tmp_path_factory.mktemp("pacs")).start()
    yield scp
    scp.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory, pacs):
    root = tmp_path_factory.mktemp("workers")
    config = node_config(
        root,
        server={"workers": 2},
        dicom={"max_associations": MAX_ASSOCIATIONS},
        remotes=[pacs.remote("pacs", forward=True)],
    )
    n = RunningNode(root, config).start(timeout=60)  # returns once both workers serve
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.stop()


def test_stores_over_parallel_associations_are_indexed_and_forwarded_once(node, pacs, tmp_path):
    groups = [write_corpus(tmp_path / f"g{i}", studies=1, series=1, instances=15) for i in range(4)]
    peers = [
        subprocess.Popen(storescu_args(node.ae_title, node.dicom_port, tmp_path / f"g{i}"))
        for i in range(len(groups))
    ]
    assert [p.wait(120) for p in peers] == [0] * len(peers)
    total = sum(len(g) for g in groups)
    assert instance_rows(node) == (total, total)
    assert node.count() == total
    # Both workers take associations: the node really runs as two processes.
    # Which worker accepts a connection is the kernel's and the scheduler's
    # choice (one accept queue), so on a loaded machine four at once can all
    # go to one; further rounds of two parallel C-ECHOs (two, so that slots
    # still being freed never meet the limit of four) must reach the other.
    for _ in range(20):
        if "node.dimse[w1]" in (log := node.log()) and "node.dimse[w2]" in log:
            break
        threads = [threading.Thread(target=echo, args=(node,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    log = node.log()  # the last round's answers too
    assert "node.dimse[w1]" in log and "node.dimse[w2]" in log, log[-3000:]
    # Forwarded once each, whichever worker stored it and whichever holds the forward job.
    wait_until("every instance at the forward remote", lambda: forwarded(node, "pacs") >= total)
    time.sleep(0.5)
    assert forwarded(node, "pacs") == total
    sent = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in pacs.files())
    assert len(sent) == total and len(set(sent)) == total


def test_metrics_add_up_over_the_workers(node):
    total = node.count()
    # Any worker may answer a scrape: each must report the node's figure.
    assert [received_total(node) for _ in range(6)] == [total] * 6
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    assert f"dicom_node_stored_instances {float(total)}" in text


def test_max_associations_counts_the_whole_node(node):
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)

    def associate():
        return ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)

    held = [associate() for _ in range(MAX_ASSOCIATIONS)]
    try:
        assert all(a.is_established for a in held)
        # Per worker the limit would leave room for four more; per node there is none.
        extra = [associate() for _ in range(4)]
        assert [a.is_rejected for a in extra] == [True] * 4
        assert "too many associations" in node.log()
    finally:
        for a in held:
            a.release()
    wait_until("a slot free again", lambda: (a := associate()).is_established and a.release() is None)
    echo(node)


def test_a_killed_worker_is_restarted_and_the_node_keeps_answering(node):
    before = worker_pids(node)
    assert len(before) == 2
    victim = before[0]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    for _ in range(5):
        echo(node)  # the other worker answers while the victim is replaced
    wait_until("the death logged", lambda: f"(pid {victim}) was killed by SIGKILL" in node.log())
    wait_until(
        "a new worker", lambda: len(pids := worker_pids(node)) == 2 and victim not in pids, timeout=60
    )
    wait_until("the new worker serving", lambda: node.log().count("of 2 serving") == 3, timeout=60)
    for _ in range(4):
        echo(node)


def test_sighup_reaches_every_worker_and_a_restarted_one(node, pacs):
    node.config["remotes"] = [pacs.remote("pacs", forward=True), pacs.remote("extra", ae_title="EXTRA")]
    node.write_config()
    node.proc.send_signal(signal.SIGHUP)
    wait_until(
        "both workers reloading",
        lambda: len(re.findall(r"node\.server\[w\d\]: config reloaded .*'extra' added", node.log())) == 2,
    )
    # A worker started after the reload runs the reloaded remotes too.
    victim = worker_pids(node)[1]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    wait_until("the new worker serving", lambda: node.log().count("of 2 serving") == 4, timeout=60)
    for _ in range(6):
        names = [r["name"] for r in httpx.get(f"{node.url}/remotes", timeout=10).json()["remotes"]]
        assert names == ["pacs", "extra"]


def test_sigterm_answers_the_c_stores_in_flight_and_exits_0(node, tmp_path):
    before = node.count()
    files = write_corpus(tmp_path / "late", studies=1, series=1, instances=80)
    peer = subprocess.Popen(storescu_args(node.ae_title, node.dicom_port, tmp_path / "late"))
    wait_until("the transfer under way", lambda: node.count() > before + 5)
    assert node.stop(signal.SIGTERM, timeout=90) == 0
    assert peer.wait(60) == 0  # every C-STORE of the association was answered with success
    assert instance_rows(node)[0] == before + len(files)
    assert "node.workers: stopped" in node.log()
    assert worker_pids(node) == []


def test_two_nodes_on_one_index_and_one_storage_act_as_one(tmp_path):
    """Item 4: on PostgreSQL in the PostgreSQL pass (one SQLite file in the SQLite pass)."""
    pacs = StoreSCP(tmp_path / "pacs2", ae_title="PACS2").start()
    root = tmp_path / "a"
    config = node_config(root, jobs={"poll_seconds": 0.5}, remotes=[pacs.remote("pacs", forward=True)])
    a, b = RunningNode(root, config), RunningNode(tmp_path / "b", twin_config(config))
    starting = [threading.Thread(target=n.start) for n in (a, b)]
    for t in starting:
        t.start()
    for t in starting:
        t.join()
    try:
        wait_until("both nodes up", lambda: all(n.proc and n.health() for n in (a, b)))
        files = write_corpus(tmp_path / "src", studies=1, series=1, instances=6, accession_prefix="TWO")
        first = dcmread(files[0], stop_before_pixels=True)
        study, accession = str(first.StudyInstanceUID), str(first.AccessionNumber)

        # A `check` beside a transfer in progress: nothing reported lost, nothing removed.
        peer = subprocess.Popen(storescu_args(a.ae_title, a.dicom_port, tmp_path / "src"))
        checked = b.cli("check")
        assert peer.wait(60) == 0
        assert "0 rows without file" in checked.stdout, checked.stdout + checked.stderr
        assert "0 left over" in checked.stdout, checked.stdout

        # Found through B, by C-FIND and by QIDO-RS.
        found = dcmtk(
            "findscu", "-S", "-aec", b.ae_title, "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"AccessionNumber={accession}", "-k", "StudyInstanceUID",
            "127.0.0.1", str(b.dicom_port),
        )  # fmt: skip
        assert study in found.stdout + found.stderr
        qido = httpx.get(f"{b.url}/dicom-web/studies", params={"AccessionNumber": accession}, timeout=10)
        assert qido.status_code == 200 and len(qido.json()) == 1
        # Served by B: WADO-RS bytes as stored, and C-GET.
        ds = dcmread(files[1], stop_before_pixels=True)
        r = httpx.get(
            f"{b.url}/dicom-web/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
            timeout=30,
        )
        assert r.status_code == 200 and dataset_bytes(files[1]) in r.content
        got = tmp_path / "got"
        got.mkdir()
        dcmtk(
            "getscu", "-S", "-aec", b.ae_title, "-od", str(got), "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(b.dicom_port),
        )  # fmt: skip
        assert len(list(got.iterdir())) == len(files)

        # Forwarded once, by whichever node holds the forward job.
        wait_until("forwarded", lambda: len(pacs.files()) >= len(files))
        time.sleep(1.0)
        assert len(pacs.files()) == len(files)
        assert forwarded(a, "pacs") == forwarded(b, "pacs") == len(files)

        # Exported once: asked of both nodes at once, one job, one archive.
        answers: list[httpx.Response] = []

        def ask(n: RunningNode) -> None:
            answers.append(httpx.post(f"{n.url}/accessions/{accession}/zip", timeout=30))

        threads = [threading.Thread(target=ask, args=(n,)) for n in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {r.status_code for r in answers} <= {200, 202}
        assert len({r.json()["id"] for r in answers}) == 1
        wait_until(
            "the archive",
            lambda: httpx.get(f"{a.url}/accessions/{accession}/zip", timeout=30).status_code == 200,
        )
        zipped = httpx.get(f"{b.url}/accessions/{accession}/zip", timeout=30)
        assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
        exports = httpx.get(f"{a.url}/jobs", params={"kind": "export"}, timeout=10).json()
        assert exports["total"] == 1
    finally:
        for n in (a, b):
            if n.proc is not None and n.proc.poll() is None:
                n.stop()
        pacs.stop()
