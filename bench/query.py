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
(default 200 = 2,000 instances), in the same run.  Prints median and p95 in ms.
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
from tests.harness import NODE_AE, Orthanc, RunningNode, median, node_config, nodelay_env, percentile

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


def filled_node(cache: Path, studies: int) -> RunningNode:
    """A node holding *studies* studies, filled through ``dicom-node import`` once and cached."""
    config = node_config(cache / "node", storage={"fsync": False})
    node = RunningNode(cache / "node", config)
    marker = cache / "filled"
    if marker.exists() and marker.read_text() == str(studies):
        return node
    shutil.rmtree(cache, ignore_errors=True)
    node = RunningNode(cache / "node", node_config(cache / "node", storage={"fsync": False}))
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
    a = ap.parse_args(argv)
    studies = 10_000 if a.full else a.studies
    cache = a.cache or Path(tempfile.gettempdir()) / f"bench-query-{studies}"

    # The measuring client gets the node's wire layer with its fast path (event
    # waits instead of 1 ms polling): without it, its own polling is a good part
    # of every figure.  Orthanc is measured with the same client.
    wire.install(fast_path=True)
    rng = random.Random(1234)
    node = filled_node(cache, studies).start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    orthanc = None
    try:
        # Warm the index file (page cache) before timing.
        Path(node.config["storage"]["database"]).read_bytes()
        results = {}
        for name, queries in identifiers(studies, a.queries, rng).items():
            time_queries(node.dicom_port, NODE_AE, queries[:5])  # warm-up
            results[name] = time_queries(node.dicom_port, NODE_AE, queries)
        reference = {}
        if not a.no_orthanc:
            orthanc = orthanc_with(tmp, a.orthanc_studies)
            for name, queries in identifiers(a.orthanc_studies, a.queries, rng).items():
                time_queries(orthanc.dicom_port, orthanc.ae_title, queries[:5])
                reference[name] = time_queries(orthanc.dicom_port, orthanc.ae_title, queries)
        n_inst = studies * SERIES_PER_STUDY * INSTANCES_PER_SERIES
        print(f"node: {studies} studies / {n_inst} instances; {a.queries} queries per type, one association")
        if reference:
            o_inst = a.orthanc_studies * SERIES_PER_STUDY * INSTANCES_PER_SERIES
            print(f"orthanc: {a.orthanc_studies} studies / {o_inst} instances, same queries")
        head = f"{'query':16} {'matches':>8} {'median ms':>10} {'p95 ms':>8} {'target':>7}"
        print(head + ("  orthanc med/p95 ms" if reference else ""))
        for name, (times, matches) in results.items():
            line = (
                f"{name:16} {matches / len(times):8.1f} {median(times):10.2f} {percentile(times, 95):8.2f}"
                f" {'<' + str(TARGETS[name]):>7}"
            )
            if name in reference:
                rt, rm = reference[name]
                line += f"  {median(rt):7.2f}/{percentile(rt, 95):<7.2f} ({rm / len(rt):.1f} matches)"
                line += f" ratio {median(times) / median(rt):.2f}"
            print(line)
    finally:
        node.stop()
        if orthanc:
            orthanc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
