"""Read-through queries: QIDO-RS and C-FIND answered from the node and its read-through upstreams.

Two real upstreams, started here, hold overlapping studies: Orthanc and
DCMTK dcmqrscp.  One node (module-scoped) has both as ``read_through``
remotes; its ``[cache]`` policy and its remotes are switched by SIGHUP.

    study    node  Orthanc  dcmqrscp
    SHARED    x      x        x
    BOTH             x        x
    QRONLY                    x
    LOCAL     x
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from bench.corpus import write_corpus
from tests import harness
from tests.harness import NODE_AE, QRSCP, Orthanc, RunningNode, dcmtk, free_port, node_config, wait_until

TIMEOUT = 2.0  # [cache].query_timeout of the node
MARGIN = 2.0  # what a loaded, shared machine may add to it


def _study(root: Path, key: str) -> tuple[str, list[Path]]:
    """Two series of two instances; accession ``RT{key}00000``, patient ``RT{key}00000``."""
    paths = write_corpus(
        root / key, studies=1, series=2, instances=2, accession_prefix=f"RT{key}", patient_prefix=f"RT{key}"
    )
    return str(dcmread(paths[0]).StudyInstanceUID), paths


class Stall:
    """A TCP port that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class Cache:
    """The node, its upstreams, the UIDs of the four studies, and how to reconfigure the node."""

    def __init__(self, node: RunningNode, uids: dict[str, str], remotes: list[dict]) -> None:
        self.node = node
        self.uids = uids
        self.remotes = remotes

    def configure(self, policy: str, extra: list[dict] | None = None) -> None:
        """Set ``[cache].query`` and the remotes, and wait for the node to apply them (SIGHUP)."""
        self.node.config["cache"]["query"] = policy
        self.node.config["remotes"] = self.remotes + (extra or [])
        self.node.write_config()
        before = self.node.log().count("config reloaded")
        self.node.proc.send_signal(signal.SIGHUP)
        wait_until("the config reload", lambda: self.node.log().count("config reloaded") > before, 15)

    def qido(self, path: str, **params) -> httpx.Response:
        r = httpx.get(f"{self.node.url}/dicom-web/{path}", params=params, timeout=30)
        assert r.status_code == 200, r.text
        return r


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("cachequery")
    studies = {key: _study(root / "src", key) for key in ("SHARED", "BOTH", "QRONLY", "LOCAL")}
    uids = {key: uid for key, (uid, _) in studies.items()}
    orthanc = Orthanc(root / "orthanc").start()
    qrscp = QRSCP(root / "qrscp").start()
    node = None
    try:
        for key in ("SHARED", "BOTH"):
            harness.storescu(orthanc.ae_title, orthanc.dicom_port, *studies[key][1])
        qrscp.load(*(root / "src" / key for key in ("SHARED", "BOTH", "QRONLY")))
        remotes = [orthanc.remote(read_through=True), qrscp.remote(read_through=True)]
        config = node_config(
            root / "node", cache={"query": "on-miss", "query_timeout": TIMEOUT}, remotes=remotes
        )
        node = RunningNode(root / "node", config).start()
        for key in ("SHARED", "LOCAL"):
            harness.storescu(node.ae_title, node.dicom_port, *studies[key][1])
        assert node.count("studies") == 2
        yield Cache(node, uids, remotes)
    finally:
        if node is not None:
            node.stop()
        qrscp.stop()
        orthanc.stop()


def _value(obj: dict, tag: str):
    values = obj.get(tag, {}).get("Value", [])
    return values[0] if values else None


def _studies(answer: list[dict]) -> dict[str, str]:
    """StudyInstanceUID -> InstanceAvailability of a QIDO answer (a UID twice fails)."""
    uids = [_value(o, "0020000D") for o in answer]
    assert len(uids) == len(set(uids)), f"duplicate studies in {uids}"
    return {_value(o, "0020000D"): _value(o, "00080056") for o in answer}


def _read_through_lines(node: RunningNode) -> int:
    return node.log().count("read-through STUDY query")


def test_qido_finds_an_upstream_only_study_once_nearline_with_a_retrieve_url(cache):
    cache.configure("on-miss")
    r = cache.qido("studies", AccessionNumber="RTBOTH00000", includefield="NumberOfStudyRelatedInstances")
    (study,) = r.json()  # held by both upstreams: one answer
    uid = cache.uids["BOTH"]
    assert _value(study, "0020000D") == uid
    assert _value(study, "00080056") == "NEARLINE"
    assert _value(study, "00081190") == f"{cache.node.url}/dicom-web/studies/{uid}"
    assert _value(study, "00100020") == "RTBOTH00000"
    assert _value(study, "00201208") == 4
    assert "warning" not in r.headers

    # Series of that study, and its instances (the study is named): upstream-only, each once.
    series = cache.qido(f"studies/{uid}/series").json()
    assert len(series) == 2 and {_value(s, "00080056") for s in series} == {"NEARLINE"}
    assert {_value(s, "00081190").rsplit("/series/", 1)[0] for s in series} == {_value(study, "00081190")}
    instances = cache.qido(f"studies/{uid}/instances").json()
    sops = [_value(i, "00080018") for i in instances]
    assert len(sops) == 4 == len(set(sops))
    assert all(_value(i, "00081190").endswith(f"/instances/{_value(i, '00080018')}") for i in instances)


def test_a_study_held_locally_and_upstream_is_online_once(cache):
    for policy in ("on-miss", "always"):
        cache.configure(policy)
        asked = _read_through_lines(cache.node)
        answer = cache.qido("studies", AccessionNumber="RTSHARED00000").json()
        assert _studies(answer) == {cache.uids["SHARED"]: "ONLINE"}, policy
        # on-miss: a local hit asks nobody; always: both upstreams were asked.
        assert _read_through_lines(cache.node) - asked == (0 if policy == "on-miss" else 2), policy


def test_findscu_finds_upstream_and_local_studies(cache, tmp_path):
    cache.configure("always")
    dcmtk(
        "findscu", "-S", "-aet", "FINDSCU", "-aec", NODE_AE, "127.0.0.1", str(cache.node.dicom_port),
        "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=RT*", "-k", "StudyInstanceUID",
        "-k", "AccessionNumber", "-k", "InstanceAvailability", "-k", "NumberOfStudyRelatedSeries",
        "-X", "-od", str(tmp_path),
    )  # fmt: skip
    responses = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    found = [(str(d.AccessionNumber), str(d.InstanceAvailability)) for d in responses]
    assert sorted(found) == [
        ("RTBOTH00000", "NEARLINE"),
        ("RTLOCAL00000", "ONLINE"),
        ("RTQRONLY00000", "NEARLINE"),
        ("RTSHARED00000", "ONLINE"),
    ]
    # Local matches first, then the upstream-only ones; counts from whoever can answer them
    # (dcmqrscp cannot: RTQRONLY's is empty, RTBOTH's comes from Orthanc).
    assert [a for a, _ in found[:2]] == ["RTSHARED00000", "RTLOCAL00000"]
    counts = {str(d.AccessionNumber): d.NumberOfStudyRelatedSeries for d in responses}
    assert counts == {"RTSHARED00000": 2, "RTLOCAL00000": 2, "RTBOTH00000": 2, "RTQRONLY00000": None}

    # on-miss, a study only dcmqrscp holds: found through the upstream.
    cache.configure("on-miss")
    out = tmp_path / "miss"
    out.mkdir()
    dcmtk(
        "findscu", "-S", "-aet", "FINDSCU", "-aec", NODE_AE, "127.0.0.1", str(cache.node.dicom_port),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={cache.uids['QRONLY']}",
        "-k", "SeriesInstanceUID", "-k", "Modality", "-k", "InstanceAvailability", "-X", "-od", str(out),
    )  # fmt: skip
    series = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert len(series) == 2 and {str(d.InstanceAvailability) for d in series} == {"NEARLINE"}
    assert {str(d.Modality) for d in series} == {"CT"}


def test_policy_never_asks_no_upstream(cache):
    cache.configure("never")
    asked = _read_through_lines(cache.node)
    assert cache.qido("studies", AccessionNumber="RTBOTH00000").json() == []
    assert cache.qido(f"studies/{cache.uids['QRONLY']}/series").json() == []
    assert _read_through_lines(cache.node) == asked


def test_always_merges_with_local_matches_and_pages_the_merged_answer(cache):
    cache.configure("always")
    answer = cache.qido("studies", PatientID="RT*").json()
    assert _studies(answer) == {
        cache.uids["SHARED"]: "ONLINE",
        cache.uids["LOCAL"]: "ONLINE",
        cache.uids["BOTH"]: "NEARLINE",
        cache.uids["QRONLY"]: "NEARLINE",
    }
    # Pages of two through the merged answer: the same four, each once, in the same order.
    pages = [cache.qido("studies", PatientID="RT*", limit=2, offset=o) for o in (0, 2, 4)]
    assert [len(p.json()) for p in pages] == [2, 2, 0]
    assert "more matches than the limit" in pages[0].headers["warning"]
    assert "warning" not in pages[1].headers
    paged = [_value(o, "0020000D") for p in pages for o in p.json()]
    assert paged == [_value(o, "0020000D") for o in answer]
    # An offset past the local matches lands in the upstream part.
    (third,) = cache.qido("studies", PatientID="RT*", limit=1, offset=3).json()
    assert _value(third, "0020000D") == _value(answer[3], "0020000D")

    # on-miss with the same query: local matches only.
    cache.configure("on-miss")
    assert set(_studies(cache.qido("studies", PatientID="RT*").json()).values()) == {"ONLINE"}


def test_an_upstream_down_or_stalled_makes_a_partial_answer_within_the_timeout(cache, tmp_path):
    stall = Stall()
    try:
        down = {
            "name": "down",
            "ae_title": "DOWN",
            "host": "127.0.0.1",
            "port": free_port(),
            "read_through": True,
        }
        stalled = {"name": "stalled", "ae_title": "STALLED", "host": "127.0.0.1", "port": stall.port}
        cache.configure("on-miss", [down, {**stalled, "read_through": True}])

        started = time.monotonic()
        r = cache.qido("studies", AccessionNumber="RTQRONLY00000")
        elapsed = time.monotonic() - started
        assert _studies(r.json()) == {cache.uids["QRONLY"]: "NEARLINE"}  # the others still answer
        assert elapsed < TIMEOUT + MARGIN, elapsed
        warning = r.headers["warning"]
        assert warning.startswith("299 ") and "Partial answer" in warning
        assert "down" in warning and "stalled" in warning and "orthanc" not in warning.split("(")[0]
        log = cache.node.log()
        assert "remote 'down'" in log and "could not be reached" in log
        assert "remote 'stalled'" in log

        # C-FIND: the same partial answer, still Success, the shortfall logged.
        started = time.monotonic()
        dcmtk(
            "findscu", "-S", "-aet", "FINDSCU", "-aec", NODE_AE, "127.0.0.1", str(cache.node.dicom_port),
            "-k", "QueryRetrieveLevel=STUDY", "-k", "AccessionNumber=RTBOTH00000", "-k", "StudyInstanceUID",
            "-X", "-od", str(tmp_path),
        )  # fmt: skip
        assert time.monotonic() - started < TIMEOUT + MARGIN
        (rsp,) = [dcmread(p) for p in tmp_path.glob("rsp*.dcm")]
        assert rsp.StudyInstanceUID == cache.uids["BOTH"]
        wait_until(
            "the C-FIND shortfall in the log",
            lambda: "C-FIND from FINDSCU: answered without" in cache.node.log(),
        )
    finally:
        stall.close()
        cache.configure("on-miss")
