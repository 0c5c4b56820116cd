"""GET /metrics after a known workload: the counts equal what was sent, under concurrent ingest.

A real node (with a token and a storescp remote it forwards to) takes
C-STOREs from three storescu processes at once and STOW-RS requests from
threads at the same time, then a C-FIND, QIDO, WADO and a ZIP export; the
scrape is parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from bench.corpus import make_dataset, write
from tests.harness import REPO, RunningNode, StoreSCP, dcmtk, node_config, storescu_args
from tests.test_stow import content_type, dicom_parts, multipart

TOKEN = "metrics-token"
STORESCU_RUNS = 3
PER_RUN = 6
STOW_REQUESTS = 4
PER_STOW = 2


def scrape(node: RunningNode) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    r = httpx.get(node.url + "/metrics", headers=node.auth_headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def count_of(samples, operation: str) -> float:
    return value(samples, "dicom_node_request_duration_seconds_count", operation=operation)


def write_study(folder: Path, n: int, accession: str) -> list[Path]:
    study, series = generate_uid(), generate_uid()
    return [
        write(
            make_dataset(study_uid=study, series_uid=series, accession=accession, instance_number=i + 1),
            folder / f"{i}.dcm",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def worked(tmp_path_factory):
    """A node after the workload, and what was sent."""
    root = tmp_path_factory.mktemp("metrics")
    scp = StoreSCP(root / "scp", ae_title="ARCHIVE").start()
    config = node_config(root / "node", http={"token": TOKEN}, remotes=[scp.remote("archive", forward=True)])
    node = RunningNode(root / "node", config).start()
    try:
        for r in range(STORESCU_RUNS):
            write_study(root / f"run{r}", PER_RUN, f"RUN{r}")
        stows = [write_study(root / f"stow{s}", PER_STOW, f"STOW{s}") for s in range(STOW_REQUESTS)]
        # Concurrent ingest: the storescu processes and the STOW requests all at once.
        procs = [
            subprocess.Popen(
                storescu_args(node.ae_title, node.dicom_port, root / f"run{r}", aet=f"MODALITY{r}"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for r in range(STORESCU_RUNS)
        ]
        answers: list[int] = []

        def stow(paths: list[Path]) -> None:
            body = multipart(dicom_parts(paths))
            r = httpx.post(
                node.url + "/dicom-web/studies",
                content=body,
                headers={"Content-Type": content_type(), **node.auth_headers()},
                timeout=60,
            )
            answers.append(r.status_code)

        threads = [threading.Thread(target=stow, args=(paths,)) for paths in stows]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [p.wait(60) for p in procs] == [0] * STORESCU_RUNS
        assert answers == [200] * STOW_REQUESTS
        # One refused part: not DICOM.
        bad = multipart([({"Content-Type": "application/dicom"}, b"this is not a DICOM file" * 10)])
        r = httpx.post(
            node.url + "/dicom-web/studies",
            content=bad,
            headers={"Content-Type": content_type(), **node.auth_headers()},
        )
        assert r.status_code == 409
        # One C-FIND, two QIDO searches, one WADO retrieve, one ZIP export.
        dcmtk(
            "findscu", "-S", "-aet", "FINDER", "-aec", node.ae_title, "-k", "0008,0052=STUDY",
            "-k", "AccessionNumber=RUN0", "-k", "StudyInstanceUID", "127.0.0.1", str(node.dicom_port),
        )  # fmt: skip
        auth = node.auth_headers()
        qido = httpx.get(node.url + "/dicom-web/studies", params={"AccessionNumber": "RUN1"}, headers=auth)
        study = qido.json()[0]["0020000D"]["Value"][0]
        assert httpx.get(node.url + f"/dicom-web/studies/{study}/series", headers=auth).status_code == 200
        assert httpx.get(node.url + f"/dicom-web/studies/{study}", headers=auth).status_code == 200
        assert httpx.post(node.url + "/accessions/RUN2/zip", headers=auth).status_code in (200, 202)
        deadline = time.monotonic() + 30
        while httpx.post(node.url + "/accessions/RUN2/zip", headers=auth).status_code != 200:
            assert time.monotonic() < deadline, "the export did not finish"
            time.sleep(0.1)
        yield node
    finally:
        node.stop()
        scp.stop()


def test_metrics_need_the_token(worked):
    assert httpx.get(worked.url + "/metrics").status_code == 401


def test_openmetrics_when_asked(worked):
    r = httpx.get(
        worked.url + "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0", **worked.auth_headers()},
    )
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_ingest_counts_equal_what_was_sent(worked):
    s = scrape(worked)
    for r in range(STORESCU_RUNS):
        got = value(s, "dicom_node_instances_received_total", door="dimse", calling_ae=f"MODALITY{r}")
        assert got == PER_RUN
    stowed = value(s, "dicom_node_instances_received_total", door="stow", calling_ae="")
    assert stowed == STOW_REQUESTS * PER_STOW
    total = STORESCU_RUNS * PER_RUN + STOW_REQUESTS * PER_STOW
    assert value(s, "dicom_node_stored_instances") == total
    # Bytes counted at ingest are the bytes the index holds (nothing was replaced).
    assert value(s, "dicom_node_received_bytes_total") == value(s, "dicom_node_storage_bytes") > 0
    assert value(s, "dicom_node_store_failures_total", reason="cannot_understand") == 1
    assert value(s, "dicom_node_storage_free_bytes") > 0


def test_request_durations_are_histograms_per_operation(worked):
    s = scrape(worked)
    assert count_of(s, "c_store") == STORESCU_RUNS * PER_RUN
    assert count_of(s, "stow") == STOW_REQUESTS + 1
    assert count_of(s, "c_find") == 1
    assert count_of(s, "qido") == 2
    assert count_of(s, "wado") == 1
    assert count_of(s, "zip") >= 2  # the POSTs that asked until the archive was ready
    # A histogram: cumulative buckets ending in +Inf == count, and a sum.
    inf = value(s, "dicom_node_request_duration_seconds_bucket", operation="c_store", le="+Inf")
    small = value(s, "dicom_node_request_duration_seconds_bucket", operation="c_store", le="0.001")
    assert inf == count_of(s, "c_store") >= small
    assert value(s, "dicom_node_request_duration_seconds_sum", operation="c_store") > 0


def test_forwarding_and_export_figures(worked):
    total = STORESCU_RUNS * PER_RUN + STOW_REQUESTS * PER_STOW
    deadline = time.monotonic() + 30
    while True:
        s = scrape(worked)
        # The counter moves when the remote answers; the outbox rows are settled in groups after.
        sent = value(s, "dicom_node_forwarded_total", remote="archive")
        if sent == total and value(s, "dicom_node_outbox_pending", remote="archive") == 0:
            break
        assert sent <= total, "an instance was counted twice"
        assert time.monotonic() < deadline, "forwarding did not finish"
        time.sleep(0.2)
    assert value(s, "dicom_node_outbox_failed", remote="archive") == 0
    assert value(s, "dicom_node_export_jobs", state="ready") == 1
    assert value(s, "dicom_node_export_jobs", state="failed") == 0


def test_active_associations_gauge(worked):
    assert value(scrape(worked), "dicom_node_associations_active") == 0
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", worked.dicom_port, ae_title=worked.ae_title)
    assert assoc.is_established
    try:
        assert value(scrape(worked), "dicom_node_associations_active") == 1
    finally:
        assoc.release()
    deadline = time.monotonic() + 5
    while value(scrape(worked), "dicom_node_associations_active") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


MULTIPROCESS_WORKER = """
import sys
from types import SimpleNamespace as NS
from node import metrics
for _ in range(int(sys.argv[1])):
    metrics.instance_received(NS(ok=True, size=100, failure_code=0), NS(door="dimse", calling_aet="CT1"))
metrics.observe("qido", 0.02)
"""


def test_several_processes_add_up(tmp_path):
    """The multi-process step of issue 16: workers write to PROMETHEUS_MULTIPROC_DIR, any one scrapes all."""
    from node.config import parse
    from node.context import open_context
    from node.metrics import exposition

    shared = tmp_path / "prom"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "PYTHONPATH": str(REPO)}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", MULTIPROCESS_WORKER, str(n)], env=env, check=True, cwd=REPO)
    config = {"storage": {"path": "s", "database": "s/index.sqlite"}, "export": {"path": "z"}}
    body, _ = exposition(open_context(parse(config, tmp_path)), shared_dir=str(shared))
    text = body.decode()
    s = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for f in text_string_to_metric_families(text)
        for x in f.samples
    }
    assert value(s, "dicom_node_instances_received_total", door="dimse", calling_ae="CT1") == 7
    assert value(s, "dicom_node_received_bytes_total") == 700
    assert count_of(s, "qido") == 2
    assert value(s, "dicom_node_stored_instances") == 0  # the state gauges read this node's index


def test_calling_ae_labels_are_bounded(monkeypatch):
    """A flood of invented calling AE titles cannot grow the label set without bound."""
    from types import SimpleNamespace as NS

    from node import metrics

    monkeypatch.setattr(metrics, "MAX_CALLING_AES", 2)
    monkeypatch.setattr(metrics, "_aes_seen", set())
    for n in range(5):
        metrics.instance_received(NS(ok=True, size=1, failure_code=0), NS(door="dimse", calling_aet=f"AE{n}"))
    labels = {k[1] for k in metrics.RECEIVED._metrics}
    assert {"AE0", "AE1", "other"} <= labels and "AE4" not in labels


def test_store_totals_are_reused_for_twenty_times_their_cost(monkeypatch, tmp_path):
    """At a million instances the aggregate takes about a second: scrapes must not run it back to back."""
    from node.index import figures
    from node.index.db import open_database

    open_database(tmp_path / "index.sqlite", durable=False)
    calls = []

    def slow() -> figures.StoreTotals:
        calls.append(time.monotonic())
        time.sleep(0.02)
        return figures.StoreTotals(len(calls), 0)

    monkeypatch.setattr(figures, "store_totals", slow)
    monkeypatch.setattr(figures, "_totals", None)
    started = time.monotonic()
    assert figures.recent_store_totals().instances == 1
    cost = time.monotonic() - started  # 20 ms, more on a busy machine
    assert figures.recent_store_totals().instances == 1  # reused: younger than 20 x its cost
    time.sleep(max(0.0, started + 25 * cost - time.monotonic()))
    assert figures.recent_store_totals().instances == 2
