"""A bounded store ([storage].max_bytes, max_age_days): which studies go, in which order, and which stay.

One node, one forward remote (DCMTK storescp, "pacs") and one upstream
(dcmqrscp, "upstream", C-GET by accession prefix "UP").  Studies are sent
with storescu; each holds three instances of the same size, and max_bytes
is 3.5 studies.  The tests run in order on the same node (each says what it
starts from): the LRU order with every study forwarded, then the forward
remote goes down and stays down.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from bench.corpus import write_corpus
from node.cache.eviction import Evictor, copy_rule
from node.config import ConfigError, parse
from node.context import open_context
from node.index import eviction as eviction_index
from node.index.models import Instance
from node.ingest import Source
from tests.harness import NODE_AE, QRSCP, RunningNode, StoreSCP, dcmtk, node_config, storescu, wait_until

PER_STUDY = 3


class Studies:
    """Study files written on demand, one study per name, all the same size."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uid: dict[str, str] = {}
        self.size: dict[str, int] = {}
        self.folder: dict[str, Path] = {}

    def write(self, name: str, accession_prefix: str | None = None) -> Path:
        folder = self.root / name
        paths = write_corpus(
            folder, studies=1, series=1, instances=PER_STUDY, accession_prefix=accession_prefix or name
        )
        from pydicom import dcmread

        self.uid[name] = dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
        self.size[name] = sum(p.stat().st_size for p in paths)
        self.folder[name] = folder
        return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eviction")
    studies = Studies(root / "corpus")
    studies.write("probe")
    study_bytes = studies.size["probe"]
    pacs = StoreSCP(root / "pacs", ae_title="PACS").start()
    qr = QRSCP(root / "qr").start()
    qr.load(studies.write("up", accession_prefix="UP"))
    config = node_config(
        root / "node",
        storage={"fsync": False, "max_bytes": int(3.5 * study_bytes), "max_age_days": 30},
        remotes=[
            pacs.remote("pacs", forward=True),
            qr.remote("upstream", retrieve="get", accession_prefixes=["UP"]),
        ],
    )
    node = RunningNode(root / "node", config).start()
    try:
        yield node, studies, pacs
    finally:
        node.stop()
        pacs.stop()
        qr.stop()


def send(node: RunningNode, studies: Studies, name: str) -> None:
    storescu(NODE_AE, node.dicom_port, studies.write(name))
    note_size(node, studies, name)


def of_study(node: RunningNode, studies: Studies, name: str, what: str, *, outbox_done: bool = False) -> int:
    """An aggregate *what* over the instances of study *name* (only those forwarded, if *outbox_done*)."""
    sql = (
        f'SELECT {what} FROM "instance" i JOIN "series" se ON se."id" = i."series_id"'
        ' JOIN "study" st ON st."id" = se."study_id"'
        + (' JOIN "outbox" o ON o."instance_id" = i."id"' if outbox_done else "")
        + ' WHERE st."study_uid" = ?'
        + (" AND o.\"state\" = 'done'" if outbox_done else "")
    )
    (value,) = node.index_rows(sql, studies.uid[name])[0]
    return int(value or 0)


def note_size(node: RunningNode, studies: Studies, name: str) -> None:
    """The study's bytes as stored (storescu sends no file meta: the node's Part-10 files are larger)."""
    studies.size[name] = of_study(node, studies, name, 'SUM(i."size")')


def held(node: RunningNode, studies: Studies, name: str) -> int:
    """Instances of study *name* the index holds (and the files must agree)."""
    count = of_study(node, studies, name, "COUNT(*)")
    files = list((node.storage / studies.uid[name]).rglob("*.dcm"))
    assert len(files) == count, f"study {name}: {count} row(s), {len(files)} file(s)"
    return count


def forwarded(node: RunningNode, studies: Studies, name: str) -> int:
    """Instances of study *name* delivered to the forward remote."""
    return of_study(node, studies, name, "COUNT(*)", outbox_done=True)


def wait_forwarded(node: RunningNode, studies: Studies, name: str) -> None:
    wait_until(f"study {name} forwarded", lambda: forwarded(node, studies, name) == PER_STUDY, timeout=30)


def wait_evicted(node: RunningNode, studies: Studies, name: str) -> None:
    """Rows go first, then the files (node/index/deletion.py): wait for both."""

    def evicted() -> bool:
        rows = of_study(node, studies, name, "COUNT(*)")
        return rows == 0 and not list((node.storage / studies.uid[name]).rglob("*.dcm"))

    wait_until(f"study {name} evicted", evicted, timeout=30)


def read(node: RunningNode, studies: Studies, name: str) -> None:
    """A client retrieves the study (WADO-RS): that is a use for the LRU order."""
    r = httpx.get(f"{node.url}/dicom-web/studies/{studies.uid[name]}", timeout=30)
    assert r.status_code == 200 and r.content


def get(node: RunningNode, studies: Studies, name: str, folder: Path) -> None:
    """A client retrieves the study with C-GET (DCMTK getscu): a use too."""
    dcmtk(
        "getscu", "-aet", "ME", "-aec", NODE_AE, "-k", "0008,0052=STUDY",
        "-k", f"StudyInstanceUID={studies.uid[name]}", "-od", str(folder), "127.0.0.1", str(node.dicom_port),
    )  # fmt: skip
    assert len(list(folder.iterdir())) == PER_STUDY


def make_old(node: RunningNode, studies: Studies, name: str, days: int = 40) -> None:
    """Tamper with the index: the study was last changed and read *days* ago."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - days * 86400))
    node.index_rows(
        'UPDATE "study" SET "updated_at" = ?, "accessed_at" = ? WHERE "study_uid" = ?',
        at,
        at,
        studies.uid[name],
    )


def assert_figures(node: RunningNode, studies: Studies, names: list[str], evicted: int) -> None:
    want = sum(studies.size[n] for n in names)

    def right() -> bool:
        storage = node.health()["storage"]
        return storage["bytes_used"] == want and storage["evicted_studies"] == evicted

    wait_until(f"/health storage figures {want} bytes, {evicted} evicted", right, timeout=10)
    storage = node.health()["storage"]
    assert storage["max_bytes"] == node.config["storage"]["max_bytes"]
    assert storage["max_age_days"] == 30


def assert_check_clean(node: RunningNode) -> None:
    result = node.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_size_evicts_the_least_recently_used_study(setup):
    """A and C forwarded; A is read after C arrived: when E takes the store over, C goes, not A."""
    node, studies, _ = setup
    for name in ("A", "C"):
        send(node, studies, name)
        wait_forwarded(node, studies, name)
    read(node, studies, "A")
    send(node, studies, "D")
    wait_forwarded(node, studies, "D")
    assert all(held(node, studies, n) == PER_STUDY for n in ("A", "C", "D"))  # 3 studies: within the limit
    send(node, studies, "E")  # 4 studies: over max_bytes, the node evicts by itself
    wait_evicted(node, studies, "C")
    assert all(held(node, studies, n) == PER_STUDY for n in ("A", "D", "E"))
    uid = studies.uid["C"]
    assert httpx.get(f"{node.url}/dicom-web/studies/{uid}", timeout=10).status_code == 404
    line = next(li for li in node.log().splitlines() if f"evicted study {uid}" in li)
    assert "3 instance(s)" in line and "reason size" in line and "copy on pacs" in line, line
    assert node.index_rows('SELECT "remotes", "reason" FROM "evicted_study" WHERE "study_uid" = ?', uid) == [
        ("pacs", "size")
    ]
    assert_figures(node, studies, ["A", "D", "E"], evicted=1)
    metrics = httpx.get(f"{node.url}/metrics", timeout=10).text
    assert 'dicom_node_evicted_studies_total{reason="size"} 1.0' in metrics


def test_a_study_not_forwarded_stays(setup, tmp_path):
    """The forward remote is down: B cannot reach it.  B is the least recently used, D goes instead."""
    node, studies, pacs = setup
    pacs.stop()
    send(node, studies, "B")  # A, D, E, B: over; A is the least recently used (read before D arrived)
    wait_evicted(node, studies, "A")
    read(node, studies, "D")
    get(node, studies, "E", tmp_path)  # now B, never read, is the least recently used
    send(node, studies, "F")  # B, D, E, F: over
    wait_evicted(node, studies, "D")
    assert held(node, studies, "B") == PER_STUDY and forwarded(node, studies, "B") == 0
    assert all(held(node, studies, n) == PER_STUDY for n in ("E", "F"))
    assert_figures(node, studies, ["B", "E", "F"], evicted=3)


def test_max_age_days(setup):
    """E was last used 40 days ago (max_age_days = 30): it goes although the store is within its limit."""
    node, studies, _ = setup
    make_old(node, studies, "E")
    make_old(node, studies, "B")  # as old, but never forwarded: it stays
    result = node.cli("evict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"evicted study {studies.uid['E']}" in result.stderr and "reason age" in result.stderr
    assert held(node, studies, "E") == 0
    assert held(node, studies, "B") == PER_STUDY and held(node, studies, "F") == PER_STUDY
    assert_figures(node, studies, ["B", "F"], evicted=4)


def test_a_study_retrieved_from_a_remote_is_evictable(setup):
    """Retrieved by the ZIP export from the upstream (C-GET), never forwarded: the upstream holds it."""
    node, studies, _ = setup
    r = httpx.post(f"{node.url}/accessions/UP00000/zip", timeout=30)
    assert r.status_code == 202, r.text

    def ready() -> bool:
        return httpx.get(f"{node.url}/accessions/UP00000/zip", timeout=30).status_code == 200

    wait_until("the export of UP00000", ready, timeout=60)
    assert held(node, studies, "up") == PER_STUDY and forwarded(node, studies, "up") == 0
    note_size(node, studies, "up")
    archive = Path(node.config["export"]["path"]) / "UP00000.zip"
    assert archive.exists()
    make_old(node, studies, "up")
    result = node.cli("evict")
    assert result.returncode == 0, result.stdout + result.stderr
    uid = studies.uid["up"]
    assert f"evicted study {uid}" in result.stderr and "copy on upstream" in result.stderr
    assert held(node, studies, "up") == 0
    assert not archive.exists()  # the export's archive went with it
    assert node.index_rows(
        'SELECT "remotes", "accession_number" FROM "evicted_study" WHERE "study_uid" = ?', uid
    ) == [("upstream", "UP00000")]
    assert held(node, studies, "B") == PER_STUDY
    assert_figures(node, studies, ["B", "F"], evicted=5)
    assert_check_clean(node)  # after five evictions, files and rows agree, no debris


def test_an_instance_arriving_meanwhile_keeps_its_study(tmp_path):
    """Judged evictable, then an instance with no copy elsewhere arrives before the deletion: it stays.

    In process, on an index of its own: the check inside the deletion's
    transaction is what keeps the newcomer (and its study) from going.
    """
    upstream = {"name": "upstream", "ae_title": "UPSTREAM", "host": "127.0.0.1", "port": 1}
    config = node_config(tmp_path, storage={"fsync": False, "max_bytes": 1}, remotes=[upstream])
    config["remotes"][0]["accession_prefixes"] = ["UP"]
    ctx = open_context(parse(config, tmp_path))
    try:
        paths = write_corpus(tmp_path / "in", studies=1, series=1, instances=3)
        for path in paths[:2]:
            assert ctx.ingest.ingest_file(path, Source("retrieve", remote="upstream"), take=False).ok
        evictor = Evictor(ctx)
        dry = evictor.run_once(dry_run=True)
        assert [(e.instances, e.reason, e.remotes) for e in dry.evicted] == [(2, "size", ("upstream",))]
        (study,) = eviction_index.least_recent(1)
        assert ctx.ingest.ingest_file(paths[2], Source("dimse", calling_aet="MODALITY"), take=False).ok
        assert evictor._evict(study, copy_rule(ctx.settings), "size") is None
        assert Instance.select().count() == 3
        done = evictor.run_once()
        assert done.evicted == [] and done.kept == 1 and Instance.select().count() == 3
    finally:
        ctx.db.close()


@pytest.mark.parametrize(
    ("key", "value"), [("max_bytes", -1), ("max_bytes", "10GB"), ("max_age_days", -2), ("max_age_days", True)]
)
def test_a_bad_limit_names_its_key(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"^\[storage\]\.{key}: expected"):
        parse({"storage": {key: value}}, tmp_path)
