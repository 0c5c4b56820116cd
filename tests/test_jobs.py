"""The one job mechanism: claims with a lease, takeover between node processes, ``/jobs``, the send kind.

Real peers: node processes sharing one index and storage folder (a copy of
one config on other ports), DCMTK ``storescp`` and pynetdicom storage SCPs
that are slow, refuse or count what they receive.
"""

from __future__ import annotations

import importlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from bench.corpus import write_corpus
from node.config import JobSettings, load
from node.index import jobs
from node.index.db import execute, open_database
from node.index.migrate import available, migrate
from node.index.models import SchemaMigration
from node.index.selection import Selection
from node.jobs.kinds import Failed, Progress, Retry
from node.jobs.runner import JobRunner
from node.remotes.send_job import queue_send
from tests.forward_peers import RefusingSCP
from tests.harness import (
    RunningNode,
    StoreSCP,
    dataset_bytes,
    free_port,
    index_database,
    node_config,
    storescu,
    twin_config,
)

FAST = {"lease_seconds": 2, "poll_seconds": 0.2}
FINAL = ("done", "failed", "cancelled")


def wait_until(what: str, check: Callable[[], object], timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def get_job(node: RunningNode, job_id: int) -> dict:
    r = httpx.get(f"{node.url}/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(node: RunningNode, job_id: int, until=lambda j: j["state"] in FINAL, timeout: float = 30.0):
    """Poll ``GET /jobs/{id}`` until *until* holds (by default: the job has ended); return the job."""
    seen: dict = {}

    def check() -> bool:
        seen["job"] = get_job(node, job_id)
        return until(seen["job"])

    wait_until(f"job {job_id}", check, timeout)
    return seen["job"]


def store(node: RunningNode, remote: str, **params) -> dict:
    r = httpx.post(f"{node.url}/remotes/{remote}/store", params=params, timeout=10)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{r.json()['id']}"
    return r.json()


def uids(paths: list[Path], attr: str = "SOPInstanceUID") -> list[str]:
    return [str(getattr(dcmread(p, stop_before_pixels=True), attr)) for p in paths]


def holder_pid(job: dict) -> int:
    return int(job["claimed_by"].split(":")[1])


# -- the mechanism, in one process ------------------------------------------------


class Counting:
    """A job kind that records which runner ran each job."""

    def __init__(self, name: str, runs: Counter, lock: threading.Lock) -> None:
        self.name, self.runs, self.lock = name, runs, lock

    def run(self, job: jobs.Job, progress: Progress) -> None:
        with self.lock:
            self.runs[job.id] += 1
        time.sleep(0.01)
        progress.update(done=1, total=1, payload={"ran_on": self.name})


class Failing:
    def run(self, job: jobs.Job, progress: Progress) -> None:
        if job.key == "broken":
            raise Failed("remote", "the remote said no")
        if job.key == "flaky":
            raise Retry("remote", "the remote is down", 0.05)
        raise ValueError("a bug")


def test_two_runners_polling_one_index_run_each_job_once(tmp_path):
    migrate(open_database(index_database(tmp_path)))
    settings = JobSettings(lease_seconds=2, poll_seconds=0.02)
    runs: Counter = Counter()
    lock = threading.Lock()
    runners = [JobRunner(settings) for _ in range(2)]
    for i, runner in enumerate(runners):
        runner.register("count", Counting(f"r{i}", runs, lock), concurrency=4)
        runner.register("fail", Failing(), max_attempts=3)
    queued = [jobs.submit("count")[0].id for _ in range(60)]
    broken = jobs.submit("fail", "broken")[0].id
    flaky = jobs.submit("fail", "flaky")[0].id
    crash = jobs.submit("fail", "crash")[0].id
    for runner in runners:
        runner.start()
    try:
        wait_until("every job ended", lambda: jobs.count_active("count") + jobs.count_active("fail") == 0)
    finally:
        for runner in runners:
            runner.stop(5)
    assert {job_id: runs[job_id] for job_id in queued} == dict.fromkeys(queued, 1)
    done = [jobs.get(job_id) for job_id in queued]
    assert {(j.state, j.attempts, j.done, j.claimed_by) for j in done} == {("done", 1, 1, None)}
    assert {j.data["ran_on"] for j in done} == {"r0", "r1"}  # both took part
    failed = jobs.get(broken)
    assert (failed.state, failed.failure, failed.message) == ("failed", "remote", "the remote said no")
    retried = jobs.get(flaky)
    assert retried.state == "failed" and retried.attempts == 3
    assert retried.message == "the remote is down (gave up after 3 attempts)"
    crashed = jobs.get(crash)
    assert (crashed.state, crashed.failure, crashed.message) == (
        "failed",
        "internal",
        "internal error: a bug",
    )


def test_export_jobs_move_into_the_job_table(tmp_path):
    """Migration 0005: ready archives stay ready, interrupted jobs are queued to resume."""
    db = open_database(index_database(tmp_path))
    db.create_tables([SchemaMigration])
    for name in available():
        if name >= "0005":
            break
        importlib.import_module(f"migrations.{name}").apply(db)
        SchemaMigration.create(name=name)
    columns = (
        "accession, state, failure, message, remote, study_uids, expected, received, instances, bytes,"
        " file_name, study_updated_at, created_at, updated_at, started_at, finished_at"
    )
    rows = [
        ("RDY1", "ready", "", "", "", "", None, 4, 4, 1234, "RDY1.zip", "2026-01-02 03:04:05.123456"),
        ("RET1", "retrieving", "", "", "pacs", "1.2.3\\1.2.4", 30, 7, 0, 99, "", None),
        ("ZIP1", "zipping", "", "", "pacs", "1.2.5", 2, 2, 0, 0, "", None),
        ("BAD1", "failed", "remote", "remote 'pacs' down", "pacs", "", None, 0, 0, 0, "", None),
    ]
    for row in rows:
        execute(
            f"INSERT INTO export_job ({columns}) VALUES ({', '.join(['?'] * 16)})",
            (*row, "2026-01-01 00:00:00", "2026-01-01 00:00:01", None, None),
        )
    assert "0005_jobs" in migrate(db)
    assert not db.table_exists("export_job")
    by_key = {j.key: j for j in jobs.of_kind("export")}
    assert {k: (j.state, j.phase) for k, j in by_key.items()} == {
        "RDY1": ("done", ""),
        "RET1": ("queued", "retrieving"),
        "ZIP1": ("queued", "zipping"),
        "BAD1": ("failed", ""),
    }
    ready = by_key["RDY1"]
    assert (ready.done, ready.total, ready.bytes) == (4, None, 1234)
    assert ready.data == {
        "remote": "",
        "study_uids": "",
        "instances": 4,
        "file_name": "RDY1.zip",
        "study_updated_at": "2026-01-02 03:04:05.123456",
    }
    resumed = by_key["RET1"]
    assert (resumed.done, resumed.total, resumed.bytes) == (7, 30, 99)
    assert resumed.data["remote"] == "pacs" and resumed.data["study_uids"] == "1.2.3\\1.2.4"
    failed = by_key["BAD1"]
    assert (failed.failure, failed.message) == ("remote", "remote 'pacs' down")
    assert all(j.claimed_by is None and j.attempts == 0 for j in by_key.values())
    assert {j.created_at.isoformat(sep=" ") for j in by_key.values()} == {"2026-01-01 00:00:00"}


# -- several node processes on one index --------------------------------------------


def test_a_stalled_node_loses_its_job_and_a_killed_one_is_taken_over(tmp_path):
    slow = RefusingSCP("SLOW", status=0x0000, delay=0.2)
    root = tmp_path / "a"
    # Without fsync a commit is short, so that SIGSTOP is most unlikely to freeze the node inside
    # one: on SQLite, a process stopped while it holds the write lock stops every writer.
    config = node_config(root, jobs=FAST, storage={"fsync": False}, remotes=[slow.remote("slow")])
    a = RunningNode(root, config).start()
    b = RunningNode(tmp_path / "b", twin_config(config)).start()
    nodes = {a.proc.pid: a, b.proc.pid: b}

    def holder_and_other(job: dict) -> tuple[RunningNode, RunningNode]:
        holder = nodes[holder_pid(job)]
        return holder, b if holder is a else a

    try:
        files = write_corpus(tmp_path / "src", studies=2, series=1, instances=10)
        storescu(a.ae_title, a.dicom_port, tmp_path / "src")
        first, second = dict.fromkeys(uids(files, "StudyInstanceUID"))

        # A node that stops answering (SIGSTOP) keeps its pid: the job moves only when its lease runs out.
        job = store(a, "slow", StudyInstanceUID=first)
        running = wait_job(a, job["id"], lambda j: j["state"] == "running" and j["progress"]["done"] >= 2)
        stalled, other = holder_and_other(running)
        stalled.proc.send_signal(signal.SIGSTOP)
        since = time.monotonic()
        moved = wait_job(other, job["id"], lambda j: j["claimed_by"] and holder_pid(j) == other.proc.pid)
        assert time.monotonic() - since > 1.0  # not before the 2 s lease had run out
        assert moved["attempts"] == 2
        stalled.proc.send_signal(signal.SIGCONT)
        done = wait_job(other, job["id"])
        assert done["state"] == "done", done
        assert done["progress"] == {"done": 10, "failed": 0, "total": 10, "bytes": done["progress"]["bytes"]}
        line = f"job {job['id']} (send): no longer held by"
        wait_until("the stalled node to give the job up", lambda: line in stalled.log())
        # Its thread ends at once (the abort wakes it from waiting for an answer the abort dropped:
        # left waiting, it once held the node's stop for 30 s).
        ended = f"job {job['id']} (send): stopped here"
        wait_until("the stalled node's job thread to end", lambda: ended in stalled.log(), timeout=10)
        time.sleep(1.0)  # it writes nothing more over the other's result
        assert get_job(other, job["id"]) == done

        # A node killed outright: the other one takes its job at once (same host, pid gone).
        job = store(a, "slow", StudyInstanceUID=second)
        running = wait_job(a, job["id"], lambda j: j["state"] == "running" and j["progress"]["done"] >= 2)
        victim, survivor = holder_and_other(running)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        done = wait_job(survivor, job["id"])
        assert done["state"] == "done" and done["progress"]["done"] == 10, done
        taken = f"job {job['id']}: its worker"
        assert taken in survivor.log() and "is gone; taking it over" in survivor.log()
        assert set(slow.received) == set(uids(files))
    finally:
        for n in (a, b):
            if n.proc and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGCONT)
                n.stop()
        slow.stop()


def test_a_stopping_node_gives_its_jobs_back_at_once_and_leaves_a_hung_one_behind(node_factory, tmp_path):
    # Remotes that take each C-STORE and keep their answer: a job's thread waits for it.
    hold = RefusingSCP("HOLD", status=0x0000, delay=300)
    stuck = RefusingSCP("STUCK", status=0x0000, delay=300)
    node = node_factory(jobs=FAST, remotes=[hold.remote("hold"), stuck.remote("stuck", forward=True)]).start()
    try:
        files = write_corpus(tmp_path / "src", studies=1, series=1, instances=2)
        storescu(node.ae_title, node.dicom_port, tmp_path / "src")
        study = uids(files, "StudyInstanceUID")[0]
        wait_until("the forward job's first C-STORE", lambda: len(stuck.calling) == 1)

        # Cancelled while it waits for an answer: the abort wakes the thread at once, rather than
        # after the DIMSE timeout (120 s). A lost lease (a node resumed from SIGSTOP) ends the same.
        job = store(node, "hold", StudyInstanceUID=study)
        wait_until("the send's first C-STORE", lambda: len(hold.calling) == 1)
        assert httpx.post(f"{node.url}/jobs/{job['id']}/cancel", timeout=10).status_code == 200
        line = f"job {job['id']} (send): stopped here"
        wait_until("the cancelled job's thread to end", lambda: line in node.log(), timeout=10)
        assert get_job(node, job["id"])["state"] == "cancelled"

        # SIGTERM: the send goes back to the queue at once (resumable by the next node, not held
        # until its lease runs out); the forward job, hung on its remote, is left behind after a
        # few seconds with one line, and its rows stay pending for the next holder.
        job = store(node, "hold", StudyInstanceUID=study)
        wait_until("the second send's C-STORE", lambda: len(hold.calling) == 2)
        assert node.stop(timeout=20) == 0  # it once waited 30 s per hung job
        log = node.log()
        assert f"job {job['id']} (send): interrupted; queued again to resume" in log
        assert log.count("still busy after") == 1 and "(forward) still busy after 5s, left behind" in log
        assert node.index_rows("SELECT state, claimed_by FROM job WHERE id = ?", job["id"]) == [
            ("queued", None)
        ]
        pending = "SELECT COUNT(*) FROM outbox WHERE remote = ? AND state = ?"
        assert node.index_rows(pending, "stuck", "pending") == [(2,)]
    finally:
        hold.stop()
        stuck.stop()


def test_two_nodes_on_one_index_run_each_job_once_and_forward_once(tmp_path):
    counter = RefusingSCP("COUNTER", status=0x0000)
    pacs = StoreSCP(tmp_path / "pacs").start()
    root = tmp_path / "a"
    config = node_config(
        root, jobs=FAST, remotes=[counter.remote("counter"), pacs.remote("pacs", forward=True)]
    )
    a = RunningNode(root, config).start()
    b = RunningNode(tmp_path / "b", twin_config(config)).start()
    try:
        files = write_corpus(tmp_path / "src", studies=1, series=1, instances=6)
        storescu(b.ae_title, b.dicom_port, tmp_path / "src")
        # One forward job for the remote, held by one of the two; every instance goes once.
        forward = httpx.get(f"{a.url}/jobs", params={"kind": "forward"}).json()
        assert forward["total"] == 1 and forward["jobs"][0]["state"] == "running"
        assert holder_pid(forward["jobs"][0]) in (a.proc.pid, b.proc.pid)
        wait_until("6 files at the forward remote", lambda: len(pacs.files()) == 6)
        for n in (a, b):
            report = wait_until(
                "the forwarded figure",
                lambda n=n: (
                    (r := httpx.get(f"{n.url}/remotes").json()["remotes"][1])["forwarded"] == 6 and r
                ),
            )
            assert report["pending"] == 0 and report["last_success"] is not None
        line = f"{pacs.ae_title}@127.0.0.1:{pacs.port}: 6 forwarded"
        wait_until("the forwarding association's line", lambda: line in a.log() + b.log())

        # Jobs queued by a third process (this one): neither node is woken, both poll for them.
        settings = load(a.config_path)
        open_database(settings.storage.database)
        study = Selection(studies=(uids(files, "StudyInstanceUID")[0],))
        queued = [queue_send(None, settings, "counter", study).id for _ in range(8)]
        for job_id in queued:
            assert wait_job(a, job_id)["state"] == "done"
        assert Counter(counter.received) == Counter({uid: 8 for uid in uids(files)})
        logs = a.log() + b.log()
        assert [logs.count(f"job {job_id} (send) started by") for job_id in queued] == [1] * 8
    finally:
        a.stop()
        b.stop()
        pacs.stop()
        counter.stop()


# -- the send kind and /jobs on one node ----------------------------------------------


@pytest.fixture(scope="module")
def sender(tmp_path_factory):
    """A node holding two studies, with a storescp remote and a forwarding remote that is down."""
    tmp = tmp_path_factory.mktemp("send")
    scp = StoreSCP(tmp / "remote").start()
    down = {"name": "late", "ae_title": "LATE", "host": "127.0.0.1", "port": free_port(), "forward": True}
    node = RunningNode(tmp / "node", node_config(tmp / "node", jobs=FAST, remotes=[scp.remote("pacs"), down]))
    node.start()
    study_a = write_corpus(tmp / "a", studies=1, series=2, instances=3, accession_prefix="SNDA")
    study_b = write_corpus(tmp / "b", studies=1, series=1, instances=3, accession_prefix="SNDB")
    storescu(node.ae_title, node.dicom_port, tmp / "a", tmp / "b")
    node.study_a, node.study_b, node.scp = study_a, study_b, scp
    yield node
    node.stop()
    scp.stop()


def test_send_a_study_to_storescp_byte_identical(sender):
    node, scp = sender, sender.scp
    study = uids(sender.study_a, "StudyInstanceUID")[0]
    job = store(node, "pacs", StudyInstanceUID=study)
    assert job["kind"] == "send" and job["key"] is None and job["progress"]["total"] == 6
    assert job["details"]["remote"] == "pacs" and job["details"]["studies"] == [study]
    done = wait_job(node, job["id"])
    size = sum(p.stat().st_size for p in (node.storage / study).rglob("*.dcm"))
    assert done["state"] == "done", done
    assert done["progress"] == {"done": 6, "failed": 0, "total": 6, "bytes": size}
    assert "6 instance(s) sent to remote 'pacs'" in done["message"]
    received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in scp.files()}
    for path in sender.study_a:
        assert dataset_bytes(received[uids([path])[0]]) == dataset_bytes(path)

    # A JSON body naming a series of one study and an instance of the other.
    series = uids(sender.study_b, "SeriesInstanceUID")[0]
    one = uids(sender.study_a)[0]
    r = httpx.post(
        f"{node.url}/remotes/pacs/store", json={"SeriesInstanceUID": [series], "SOPInstanceUID": one}
    )
    assert r.status_code == 202, r.text
    done = wait_job(node, r.json()["id"])
    assert done["state"] == "done" and done["progress"]["done"] == 4, done


def test_send_requests_that_cannot_be_queued(sender):
    node = sender
    study = uids(sender.study_a, "StudyInstanceUID")[0]
    cases = [
        ("/remotes/nope/store", {"StudyInstanceUID": study}, None, 404, "no remote named 'nope'"),
        ("/remotes/pacs/store", {}, None, 400, "nothing to send"),
        ("/remotes/pacs/store", {"StudyInstanceUID": "1.2.3.4"}, None, 400, "not held by this node: 1.2.3.4"),
        ("/remotes/pacs/store", {"SeriesInstanceUID": "1..2"}, None, 400, "not a valid UID"),
        ("/remotes/pacs/store", {}, b"{not json", 400, "not JSON"),
        ("/remotes/pacs/store", {}, b'{"Study": "1.2"}', 400, "unknown key 'Study'"),
        ("/remotes/pacs/store", {}, b'{"StudyInstanceUID": 5}', 400, "a UID or a list of UIDs"),
    ]
    before = httpx.get(f"{node.url}/jobs", params={"kind": "send"}).json()["total"]
    for path, params, body, status, text in cases:
        r = httpx.post(f"{node.url}{path}", params=params, content=body)
        assert r.status_code == status, (path, params, body, r.text)
        assert text in r.json()["error"], r.json()
    assert httpx.get(f"{node.url}/jobs", params={"kind": "send"}).json()["total"] == before


def test_send_from_the_command_line(sender):
    node = sender
    study = uids(sender.study_b, "StudyInstanceUID")[0]
    result = node.cli("send", "pacs", study)
    assert result.returncode == 0, result.stderr
    assert "queued: 3 instance(s) to pacs" in result.stdout
    assert "done: 3 instance(s) sent to remote 'pacs'" in result.stdout
    result = node.cli("send", "--no-wait", "pacs", uids(sender.study_b)[0])
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.split("send job ")[1].split()[0])
    assert wait_job(node, job_id)["progress"]["done"] == 1  # sent by the running node
    unknown = node.cli("send", "nope", study)
    assert unknown.returncode == 2 and "no remote named 'nope'" in unknown.stderr


def test_jobs_listing_filters_and_paging(sender):
    node = sender
    accession = "SNDA00000"
    assert httpx.post(f"{node.url}/accessions/{accession}/zip").status_code in (200, 202)
    export = wait_until(
        "the archive",
        lambda: (r := httpx.post(f"{node.url}/accessions/{accession}/zip")).status_code == 200 and r.json(),
    )
    assert export["state"] == "ready" and export["job_url"] == f"/jobs/{export['id']}"
    store(node, "pacs", StudyInstanceUID=uids(sender.study_b, "StudyInstanceUID")[0])

    listing = httpx.get(f"{node.url}/jobs").json()
    ids = [j["id"] for j in listing["jobs"]]
    assert ids == sorted(ids, reverse=True) and listing["total"] == len(ids) >= 3
    assert {"send", "export", "forward"} <= {j["kind"] for j in listing["jobs"]}
    as_export = get_job(node, export["id"])
    assert as_export["kind"] == "export" and as_export["key"] == accession and as_export["state"] == "done"
    assert as_export["details"]["state"] == "ready" and as_export["details"]["instances"] == 6
    forward = httpx.get(f"{node.url}/jobs", params={"kind": "forward"}).json()["jobs"]
    assert [(j["key"], j["state"]) for j in forward] == [("late", "running")]
    assert forward[0]["details"]["last_error"] and "LATE@127.0.0.1" in forward[0]["message"]

    sends = httpx.get(f"{node.url}/jobs", params={"kind": "send"}).json()
    assert sends["total"] >= 1 and {j["kind"] for j in sends["jobs"]} == {"send"}
    mixed = httpx.get(f"{node.url}/jobs", params=[("kind", "send,export"), ("state", "done")]).json()
    assert {j["kind"] for j in mixed["jobs"]} <= {"send", "export"} and all(
        j["state"] == "done" for j in mixed["jobs"]
    )
    page = httpx.get(f"{node.url}/jobs", params={"limit": 2, "offset": 1}).json()
    assert [j["id"] for j in page["jobs"]] == ids[1:3] and (page["limit"], page["offset"]) == (2, 1)

    for params, text in (({"state": "bogus"}, "unknown state 'bogus'"), ({"limit": "0"}, "limit must be")):
        r = httpx.get(f"{node.url}/jobs", params=params)
        assert r.status_code == 400 and text in r.json()["error"]
    for job_id in ("999999", "abc"):
        r = httpx.get(f"{node.url}/jobs/{job_id}")
        assert r.status_code == 404 and "no job with id" in r.json()["error"]
    assert httpx.post(f"{node.url}/jobs/{forward[0]['id']}/cancel").status_code == 409
    assert httpx.post(f"{node.url}/jobs/{export['id']}/cancel").status_code == 409
    assert httpx.post(f"{node.url}/jobs/{export['id']}/retry").status_code == 409


def test_a_send_that_cannot_go_says_why_and_retries(node_factory, tmp_path):
    port = free_port()
    refuser = RefusingSCP("REFUSER", status=0xA900)
    flaky = RefusingSCP("FLAKY", status=0x0110)
    later = {"name": "later", "ae_title": "LATER", "host": "127.0.0.1", "port": port}
    node = node_factory(jobs=FAST, remotes=[later, refuser.remote("refuser"), flaky.remote("flaky")]).start()
    try:
        files = write_corpus(tmp_path / "src", studies=1, series=1, instances=3)
        storescu(node.ae_title, node.dicom_port, tmp_path / "src")
        study = uids(files, "StudyInstanceUID")[0]

        # Down: the job waits and retries with a back-off; its row says why.
        job = store(node, "later", StudyInstanceUID=study)
        waiting = wait_job(node, job["id"], lambda j: j["state"] == "queued" and j["attempts"] >= 2)
        assert "remote 'later'" in waiting["message"] and "could not be reached" in waiting["message"]
        assert waiting["not_before"] is not None and waiting["progress"]["done"] == 0
        with StoreSCP(tmp_path / "later", ae_title="LATER", port=port).start() as scp:
            done = wait_job(node, job["id"], timeout=30)
            assert done["state"] == "done" and done["progress"]["done"] == 3, done
            assert sorted(uids(scp.files())) == sorted(uids(files))

        # Refused for good: failed at once, with the remote's status for each instance.
        job = store(node, "refuser", StudyInstanceUID=study)
        failed = wait_job(node, job["id"])
        assert failed["state"] == "failed" and failed["failure"] == "refused", failed
        assert failed["progress"]["failed"] == 3 and failed["progress"]["done"] == 0
        assert "0 instance(s) sent to remote 'refuser'" in failed["message"] and "0xA900" in failed["message"]
        assert [r["status"] for r in failed["details"]["refused"]] == [0xA900] * 3

        # Refused for now (processing failure): sent again after a back-off, until it goes.
        job = store(node, "flaky", StudyInstanceUID=study)
        waiting = wait_job(node, job["id"], lambda j: j["state"] == "queued" and j["attempts"] >= 1)
        assert "refused 3 instance(s) for now" in waiting["message"] and "0x0110" in waiting["message"]
        assert waiting["details"]["to_retry"] == 3
        flaky.status = 0x0000
        done = wait_job(node, job["id"])
        assert done["state"] == "done" and done["progress"] == {
            "done": 3,
            "failed": 0,
            "total": 3,
            "bytes": done["progress"]["bytes"],
        }
        assert sorted(flaky.received) == sorted(uids(files))
    finally:
        refuser.stop()
        flaky.stop()
