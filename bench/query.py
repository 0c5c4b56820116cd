"""C-FIND benchmark: the node holding 10,000 studies / 100,000 instances, Orthanc for scale.

    python -m bench.query [--studies 1000] [--full] [--queries 60] [--no-orthanc]

The index is filled through ``dicom-node import`` (the ingest path) from
synthetic tiny instances: 2 series x 5 instances per study, two studies per
patient, study dates spread over ten years.  ``--full`` is 10,000 studies
(100,000 instances); the default is 1,000 studies.  A filled node is kept in
``--cache`` (default ``/tmp/bench-query-<studies>``) and reused by later runs.

Each query type runs ``--queries`` times (different values) inside one
pynetdicom association (with the node's wire layer and its fast path, so that the
client's own 1 ms polling does not dominate), timed from the request to the
final response:
study level by AccessionNumber, by PatientID, by PatientName prefix wildcard
(``SURNAME^GIVEN*``) and by a one-week StudyDate range, and series level by
StudyInstanceUID; every study-level query asks for the keys a viewer shows
(names, dates, description, ModalitiesInStudy, NumberOfStudyRelatedInstances).
Orthanc answers the same query types holding ``--orthanc-studies`` studies
(default 200 = 2,000 instances), in the same run.  The node runs twice, with
its wire layer's fast path (``node``) and on pynetdicom's own code paths
(``node-nofast``).  Prints median and p95 in ms, then the wall time of one
DCMTK ``findscu`` call (association, one C-FIND by AccessionNumber, release)
against each server, median of ``--calls``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT

from bench.corpus import make_dataset, write
from node.dimse import wire
from tests.harness import (
    NODE_AE,
    Orthanc,
    RunningNode,
    median,
    node_config,
    nodelay_env,
    percentile,
    time_calls,
)

SERIES_PER_STUDY = 2
INSTANCES_PER_SERIES = 5
SURNAMES = [
    f"{a}{b}"
    for a in ("IVAN", "PETR", "SMIRN", "KUZNETS", "POP", "VASIL", "SOKOL", "MIKHAIL", "NOVIK", "FEDOR")
    for b in ("OV", "EV", "IN", "SKY", "ENKO")
]
GIVEN = ["ANNA", "IVAN", "OLGA", "PETR", "MARIA", "SERGEI", "ELENA", "DMITRI", "NINA", "PAVEL"]
START = dt.date(2015, 1, 1)
TARGETS = {"accession": 10, "patient id": 10, "name wildcard": 50, "date range": 50, "series by study": 10}


def study_uid(s: int) -> str:
    return f"2.25.{10**12 + s}"


def patient_of(s: int) -> int:
    return s // 2


def patient_name(p: int) -> str:
    surname = SURNAMES[p % len(SURNAMES)]
    given = GIVEN[(p // len(SURNAMES)) % len(GIVEN)]
    return f"{surname}^{given}^{chr(65 + (p // 500) % 26)}"


def study_date(s: int) -> str:
    return (START + dt.timedelta(days=(s * 7919) % 3650)).strftime("%Y%m%d")


def write_studies(out: Path, first: int, last: int) -> int:
    """Write studies first..last-1 (tiny instances); returns how many files."""
    count = 0
    for s in range(first, last):
        p = patient_of(s)
        for r in range(SERIES_PER_STUDY):
            series_uid = f"{study_uid(s)}.{r + 1}"
            for i in range(INSTANCES_PER_SERIES):
                ds = make_dataset(
                    study_uid=study_uid(s),
                    series_uid=series_uid,
                    sop_uid=f"{series_uid}.{i + 1}",
                    patient_id=f"P{p:07d}",
                    patient_name=patient_name(p),
                    accession=f"A{s:08d}",
                    study_date=study_date(s),
                    modality=("CT", "MR")[r % 2],
                    series_number=r + 1,
                    instance_number=i + 1,
                )
                write(ds, out / f"{s // 1000:04d}" / f"{s:08d}_{r}_{i}.dcm")
                count += 1
    return count


def corpus(out: Path, studies: int, workers: int = 2) -> None:
    chunk = max(1, studies // (workers * 8))
    with ProcessPoolExecutor(workers) as pool:
        jobs = [pool.submit(write_studies, out, a, min(studies, a + chunk)) for a in range(0, studies, chunk)]
        for job in jobs:
            job.result()


def filled_node(cache: Path, studies: int, *, fast_path: bool = True) -> RunningNode:
    """A node holding *studies* studies, filled through ``dicom-node import`` once and cached."""
    config = node_config(cache / "node", dicom={"fast_path": fast_path}, storage={"fsync": False})
    node = RunningNode(cache / "node", config)
    marker = cache / "filled"
    if marker.exists() and marker.read_text() == str(studies):
        return node
    shutil.rmtree(cache, ignore_errors=True)
    node = RunningNode(cache / "node", config)
    files = cache / "corpus"
    t0 = time.perf_counter()
    corpus(files, studies)
    t1 = time.perf_counter()
    result = node.cli("import", "-q", str(files), timeout=24 * 3600)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    t2 = time.perf_counter()
    n = studies * SERIES_PER_STUDY * INSTANCES_PER_SERIES
    print(f"filled: {studies} studies, {n} instances; generated {t1 - t0:.0f}s, imported {t2 - t1:.0f}s")
    shutil.rmtree(files, ignore_errors=True)
    marker.write_text(str(studies))
    return node


def identifiers(studies: int, n: int, rng: random.Random) -> dict[str, list[Dataset]]:
    """*n* identifiers per query type, for values that exist among *studies*."""

    def study_keys(**keys) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber"):
            setattr(ds, keyword, "")
        ds.StudyDescription = ""
        ds.ModalitiesInStudy = ""
        ds.NumberOfStudyRelatedInstances = ""
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        return ds

    def series_keys(uid: str) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = uid
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.SeriesNumber = ""
        ds.SeriesDescription = ""
        ds.NumberOfSeriesRelatedInstances = ""
        return ds

    picks = [rng.randrange(studies) for _ in range(n)]
    out: dict[str, list[Dataset]] = {
        "accession": [study_keys(AccessionNumber=f"A{s:08d}") for s in picks],
        "patient id": [study_keys(PatientID=f"P{patient_of(s):07d}") for s in picks],
        "name wildcard": [
            study_keys(PatientName="^".join(patient_name(patient_of(s)).split("^")[:2]) + "*") for s in picks
        ],
        "date range": [],
        "series by study": [series_keys(study_uid(s)) for s in picks],
    }
    for s in picks:
        first = dt.datetime.strptime(study_date(s), "%Y%m%d").date()
        last = first + dt.timedelta(days=6)
        out["date range"].append(study_keys(StudyDate=f"{first:%Y%m%d}-{last:%Y%m%d}"))
    return out


def time_queries(port: int, ae_title: str, queries: list[Dataset]) -> tuple[list[float], int]:
    """Milliseconds per query (request to final response) over one association; total matches."""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"{ae_title} did not accept the association")
    # Nagle's algorithm off on our side too (small PDUs must not wait for delayed ACKs).
    wire.prepare(assoc)
    times, matches = [], 0
    try:
        for ds in queries:
            t0 = time.perf_counter()
            for status, _ in assoc.send_c_find(ds, STUDY_ROOT):
                if status is None or status.Status not in (0xFF00, 0xFF01, 0x0000):
                    raise RuntimeError(f"{ae_title}: C-FIND failed: {status}")
                if status.Status != 0x0000:
                    matches += 1
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        assoc.release()
    return times, matches


def orthanc_with(tmp: Path, studies: int) -> Orthanc:
    files = tmp / "orthanc-corpus"
    write_studies(files, 0, studies)
    orthanc = Orthanc(tmp / "orthanc").start()
    subprocess.run(
        ["storescu", "-aec", orthanc.ae_title, "+sd", "+r", "127.0.0.1", str(orthanc.dicom_port), str(files)],
        check=True,
        capture_output=True,
        env=nodelay_env(),
    )
    return orthanc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--full", action="store_true", help="10,000 studies / 100,000 instances")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--orthanc-studies", type=int, default=200)
    ap.add_argument("--no-orthanc", action="store_true")
    ap.add_argument("--calls", type=int, default=40, help="findscu calls per server")
    a = ap.parse_args(argv)
    studies = 10_000 if a.full else a.studies
    cache = a.cache or Path(tempfile.gettempdir()) / f"bench-query-{studies}"

    # The measuring client gets the node's wire layer with its fast path (event
    # waits instead of 1 ms polling): without it, its own polling is a good part
    # of every figure.  Orthanc is measured with the same client.
    wire.install(fast_path=True)
    rng = random.Random(1234)
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    filled_node(cache, studies)  # fill the cache once
    modes = {"node": True, "node-nofast": False}
    nodes = {mode: same_store(cache, tmp / mode, fast_path).start() for mode, fast_path in modes.items()}
    results: dict[str, dict] = {}
    orthanc = None
    try:
        # Warm the index file (page cache) before timing.
        Path(nodes["node"].config["storage"]["database"]).read_bytes()
        for mode, node in nodes.items():
            results[mode] = {}
            for name, queries in identifiers(studies, a.queries, rng).items():
                time_queries(node.dicom_port, NODE_AE, queries[:5])  # warm-up
                results[mode][name] = time_queries(node.dicom_port, NODE_AE, queries)
        servers = {mode: (NODE_AE, node.dicom_port) for mode, node in nodes.items()}
        if not a.no_orthanc:
            orthanc = orthanc_with(tmp, a.orthanc_studies)
            results["orthanc"] = {}
            for name, queries in identifiers(a.orthanc_studies, a.queries, rng).items():
                time_queries(orthanc.dicom_port, orthanc.ae_title, queries[:5])
                results["orthanc"][name] = time_queries(orthanc.dicom_port, orthanc.ae_title, queries)
            servers["orthanc"] = (orthanc.ae_title, orthanc.dicom_port)
        per_call = findscu_per_call(servers, "A00000042", a.calls)
        n_inst = studies * SERIES_PER_STUDY * INSTANCES_PER_SERIES
        print(f"node: {studies} studies / {n_inst} instances; {a.queries} queries per type, one association")
        if "orthanc" in results:
            o_inst = a.orthanc_studies * SERIES_PER_STUDY * INSTANCES_PER_SERIES
            print(f"orthanc: {a.orthanc_studies} studies / {o_inst} instances, same queries")
        head = f"{'query':16} {'target':>7}" + "".join(f" {m + ' med/p95 (matches)':>30}" for m in results)
        print(head + ("  node/orthanc" if "orthanc" in results else ""))
        for name in results["node"]:
            line = f"{name:16} {'<' + str(TARGETS[name]):>7}"
            for mode in results:
                times, matches = results[mode][name]
                cell = f"{median(times):.2f}/{percentile(times, 95):.2f} ({matches / len(times):.1f})"
                line += f" {cell:>30}"
            if "orthanc" in results:
                line += f"  {median(results['node'][name][0]) / median(results['orthanc'][name][0]):.2f}"
            print(line)
        figures = ", ".join(f"{m} {v:.1f}" for m, v in per_call.items())
        print(f"findscu per call (median of {a.calls}, ms): {figures}")
        if "orthanc" in per_call:
            ratios = ", ".join(f"{m} {per_call[m] / per_call['orthanc']:.2f}" for m in modes)
            print(f"findscu per call, ratio to orthanc (lower is faster): {ratios}")
    finally:
        for node in nodes.values():
            node.stop()
        if orthanc:
            orthanc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def same_store(cache: Path, root: Path, fast_path: bool) -> RunningNode:
    """A node (its own ports, config and log under *root*) serving the cached filled store."""
    filled = node_config(cache / "node")["storage"]
    storage = {"path": filled["path"], "database": filled["database"], "fsync": False}
    return RunningNode(root, node_config(root, dicom={"fast_path": fast_path}, storage=storage))


def findscu_per_call(servers: dict[str, tuple[str, int]], accession: str, calls: int) -> dict[str, float]:
    """Median ms of one DCMTK findscu call (association, one C-FIND, release) per server, interleaved."""
    commands = {
        name: [
            "findscu", "-S", "-aet", "BENCH", "-aec", ae_title, "-k", "0008,0052=STUDY",
            "-k", f"AccessionNumber={accession}", "-k", "StudyInstanceUID", "-k", "PatientName",
            "127.0.0.1", str(port),
        ]  # fmt: skip
        for name, (ae_title, port) in servers.items()
    }
    time_calls(commands, 3, nodelay_env())  # warm-up
    return {name: median(t) for name, t in time_calls(commands, calls, nodelay_env()).items()}


if __name__ == "__main__":
    main()
