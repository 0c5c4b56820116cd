"""The index at a million instances: C-FIND latency and C-STORE rate, SQLite and PostgreSQL.

    python -m bench.big_index [--instances 1000000] [--studies 20000] [--backend sqlite,postgresql]
                              [--queries 100] [--stores 500] [--rounds 3] [--explain] [--no-orthanc]

The big index is built synthetically through the index API (``node.index.bulk``:
patient / study / series / instance rows in the index's own schema, loaded
many rows per round trip), not by importing files: 1,000,000 instances in
20,000 studies (2 series of 25 instances each; two studies per patient,
dates over ten years; the values of ``bench/query.py``).  It is kept in
``--cache`` (default ``/tmp/bench-big-<instances>``) and reused; PostgreSQL
runs as a private durable server (fsync on) whose cluster lives there too.

Then, per backend, in the same run:

- the query engine in-process (``node.index.query.run``, all matches read):
  median / p95 ms over ``--queries`` random values per query type;
- C-FIND against a node serving that index, over one pynetdicom association
  (request to final response, as in ``bench/query.py``), and as DCMTK
  ``findscu`` runs (process start and association included) beside the
  same ``findscu`` against a node on an empty index, the fixed cost;
- C-STORE: DCMTK ``storescu`` sends ``--stores`` tiny instances (fresh UIDs
  each round) over one association to the node on the big index and to a
  node on an empty index, rounds interleaved; the ratio big / empty is the
  "flat from empty to 1M" figure.  The same instances also go through the
  ingest path in-process (``Ingest.ingest_file``, no network), which shows the
  index's share without the noise of the DIMSE side.

Orthanc answers the same C-FIND types holding ``--orthanc-studies`` studies
(2,000 instances by default: loading a million into it takes hours), for
scale.  ``--explain`` prints each query type's plan (EXPLAIN QUERY PLAN /
EXPLAIN).  Targets: C-FIND by AccessionNumber and PatientID under 10 ms; the
ingest ratio big / empty at least 0.9.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from bench.corpus import write_corpus
from bench.ingest import storescu, warm
from bench.query import orthanc_with, patient_name, patient_of, study_date, study_uid, time_queries
from node.index import bulk
from node.index import db as index_db
from node.index import query as engine
from node.index.db import open_database
from node.index.migrate import migrate
from node.index.models import Instance, Patient, Series, Study
from node.ingest import Ingest, Source
from node.store import InstanceStore
from tests.harness import (
    NODE_AE,
    PostgresServer,
    RunningNode,
    index_rows,
    median,
    node_config,
    nodelay_env,
    percentile,
)

SERIES_PER_STUDY = 2
CHUNK_STUDIES = 1000  # studies loaded per transaction
TARGETS = {"accession": 10.0, "patient id": 10.0}
VIEWER_KEYS = ("StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
# Every query asks for these (filled in by universal matching where not a filter).
SHOWN_KEYS = ("PatientName", "PatientID", "StudyDate", "AccessionNumber", *VIEWER_KEYS)


# -- the synthetic archive -------------------------------------------------------------


def _chunk(first: int, last: int, per_series: int, now: dt.datetime) -> dict[type, list[tuple]]:
    """Rows of studies first..last-1 (ids are 1-based positions: study s has id s + 1)."""
    rows: dict[type, list[tuple]] = {Patient: [], Study: [], Series: [], Instance: []}
    for s in range(first, last):
        p = patient_of(s)
        if s == 0 or patient_of(s - 1) != p:
            name = patient_name(p)
            key = name.casefold()
            rows[Patient].append((p + 1, f"P{p:07d}", name, key, "19700101", "O", "", "", now, now))
        uid = study_uid(s)
        rows[Study].append(
            (s + 1, uid, p + 1, study_date(s), "101500", f"A{s:08d}", str(s), "Synthetic study", "", "", "",
             "", now, now)
        )  # fmt: skip
        for r in range(SERIES_PER_STUDY):
            se = s * SERIES_PER_STUDY + r
            series_uid = f"{uid}.{r + 1}"
            rows[Series].append(
                (se + 1, series_uid, s + 1, ("CT", "MR")[r % 2], r + 1, "", "", "", "", "", now, now)
            )
            for i in range(per_series):
                n = se * per_series + i
                sop = f"{series_uid}.{i + 1}"
                rows[Instance].append(
                    (n + 1, sop, se + 1, CTImageStorage, i + 1, ExplicitVRLittleEndian, 32, 32, None, "", "",
                     "", f"bulk/{uid}/{series_uid}/{sop}.dcm", 3000, now, "BULK", "import")
                )  # fmt: skip
    return rows


COLUMNS = {
    Patient: ("id", "patient_id", "patient_name", "patient_name_key", "birth_date", "sex",
              "issuer_of_patient_id", "charset", "created_at", "updated_at"),
    Study: ("id", "study_uid", "patient_id", "study_date", "study_time", "accession_number", "study_id",
            "study_description", "referring_physician", "referring_physician_key", "institution_name",
            "charset", "created_at", "updated_at"),
    Series: ("id", "series_uid", "study_id", "modality", "series_number", "series_description", "series_date",
             "series_time", "body_part_examined", "protocol_name", "created_at", "updated_at"),
    Instance: ("id", "sop_uid", "series_id", "sop_class_uid", "instance_number", "transfer_syntax", "rows",
               "columns", "number_of_frames", "content_date", "content_time", "charset", "path", "size",
               "received_at", "calling_aet", "source"),
}  # fmt: skip


def build(target: str, studies: int, per_series: int) -> None:
    """Fill the (migrated, empty) index *target* with *studies* synthetic studies."""
    migrate(open_database(target, durable=False))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    for first in range(0, studies, CHUNK_STUDIES):
        rows = _chunk(first, min(studies, first + CHUNK_STUDIES), per_series, now)
        for model in (Patient, Study, Series, Instance):
            bulk.insert(model, COLUMNS[model], rows[model])
        done = min(studies, first + CHUNK_STUDIES)
        rate = done * SERIES_PER_STUDY * per_series / (time.perf_counter() - t0)
        print(f"\r  built {done}/{studies} studies ({rate:,.0f} instances/s)", end="", flush=True)
    bulk.finish((Patient, Study, Series, Instance))
    print(f"\r  built {studies} studies in {time.perf_counter() - t0:.0f}s" + " " * 20)


# -- the backends ----------------------------------------------------------------------


class Backend:
    """Where the big index lives, and how to make an empty index beside it."""

    name = ""

    def big(self) -> str:
        raise NotImplementedError

    def empty(self, root: Path) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, cache: Path) -> None:
        self.path = cache / "sqlite" / "index.sqlite"

    def big(self) -> str:
        return str(self.path)

    def empty(self, root: Path) -> str:
        return str(root / "index.sqlite")


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, cache: Path) -> None:
        # Durable (fsync on), as the SQLite index commits with synchronous=FULL.
        self.server = PostgresServer(cache / "pg", durable=True).start()
        self._empties: list[str] = []

    def big(self) -> str:
        if not index_rows(self.server.url(), "SELECT 1 FROM pg_database WHERE datname = ?", "big"):
            self.server.create_database("big")
        return self.server.url("big")

    def empty(self, root: Path) -> str:
        url = self.server.create_database()
        self._empties.append(url.rsplit("/", 1)[1])
        return url

    def stop(self) -> None:
        for name in self._empties:
            self.server.drop_database(name)
        self.server.stop()


def big_index(backend: Backend, cache: Path, instances: int, studies: int) -> str:
    """The backend's big index, built once per size and kept in *cache*."""
    per_series = instances // (studies * SERIES_PER_STUDY)
    marker = cache / f"built-{backend.name}"
    wanted = f"{studies} {per_series}"
    target = backend.big()
    if not (marker.exists() and marker.read_text() == wanted):
        if backend.name == "sqlite":
            shutil.rmtree(Path(target).parent, ignore_errors=True)
        elif index_rows(target, "SELECT 1 FROM pg_tables WHERE tablename = 'instance'"):
            raise RuntimeError(f"{cache}/pg holds a partial index: remove {cache} and run again")
        print(f"{backend.name}: building {studies * SERIES_PER_STUDY * per_series:,} instances")
        build(target, studies, per_series)
        marker.write_text(wanted)
    return target


# -- the queries -----------------------------------------------------------------------


def query_values(studies: int, n: int, rng: random.Random) -> dict[str, list[dict[str, str]]]:
    """*n* filter sets per query type, for values that exist among *studies*."""
    picks = [rng.randrange(studies) for _ in range(n)]
    out: dict[str, list[dict[str, str]]] = {
        "accession": [{"AccessionNumber": f"A{s:08d}"} for s in picks],
        "patient id": [{"PatientID": f"P{patient_of(s):07d}"} for s in picks],
        "name wildcard": [
            {"PatientName": "^".join(patient_name(patient_of(s)).split("^")[:2]) + "*"} for s in picks
        ],
        "date range": [],
    }
    for s in picks:
        first = dt.datetime.strptime(study_date(s), "%Y%m%d").date()
        out["date range"].append({"StudyDate": f"{first:%Y%m%d}-{first + dt.timedelta(days=6):%Y%m%d}"})
    return out


def study_query(filters: dict[str, str]) -> engine.Query:
    base = {k: "" for k in SHOWN_KEYS[:4]}
    return engine.Query("STUDY", {**base, **filters}, return_keys=VIEWER_KEYS)


def as_identifier(filters: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in ("StudyInstanceUID", *SHOWN_KEYS):
        setattr(ds, keyword, "")
    for keyword, value in filters.items():
        setattr(ds, keyword, value)
    return ds


def engine_times(values: list[dict[str, str]]) -> tuple[list[float], int]:
    times, matches = [], 0
    for filters in values:
        t0 = time.perf_counter()
        matches += len(list(engine.run(study_query(filters))))
        times.append((time.perf_counter() - t0) * 1000)
    return times, matches


def findscu_times(port: int, ae_title: str, values: list[dict[str, str]]) -> list[float]:
    """Wall ms of one DCMTK findscu run per filter set (process, association, query, release)."""
    times = []
    for filters in values:
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
        for keyword in SHOWN_KEYS:
            keys += ["-k", f"{keyword}={filters.get(keyword, '')}"]
        cmd = ["findscu", "-S", "-aet", "BENCH", "-aec", ae_title, *keys, "127.0.0.1", str(port)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=nodelay_env())
        times.append((time.perf_counter() - t0) * 1000)
    return times


def explain(values: dict[str, list[dict[str, str]]]) -> None:
    for name, filters in values.items():
        print(f"  plan, {name}:")
        for line in engine.explain(study_query(filters[0])):
            print(f"    {line}")


# -- the run ---------------------------------------------------------------------------


def node_on(root: Path, database: str, **storage) -> RunningNode:
    return RunningNode(root, node_config(root, storage={"database": database, **storage})).start()


def ingest_rates(
    backend: Backend, big: str, tmp: Path, stores: int, rounds: int
) -> tuple[list[float], list[float]]:
    """Instances/s of *stores* tiny C-STOREs into the node on *big* and on an empty index, interleaved."""
    rates: dict[str, list[float]] = {"big": [], "empty": []}
    counter = iter(range(1_000_000))
    for r in range(rounds):
        for label in ("big", "empty") if r % 2 == 0 else ("empty", "big"):
            n = f"{backend.name}-{next(counter)}"
            files = write_corpus(tmp / f"c{n}", studies=1, series=1, instances=stores, size="tiny")
            database = big if label == "big" else backend.empty(tmp / f"e{n}")
            node = node_on(tmp / f"n{n}", database)
            try:
                warm(files)
                rates[label].append(stores / storescu(NODE_AE, node.dicom_port, [files]))
            finally:
                node.stop()
            shutil.rmtree(tmp / f"c{n}", ignore_errors=True)
    return rates["big"], rates["empty"]


def ingest_path_times(backend: Backend, big: str, tmp: Path, n: int, rounds: int) -> tuple[list, list]:
    """ms per instance of the ingest path in-process (no network), into *big* and an empty index.

    ``Ingest.ingest_file`` on tiny files with a durable index (the file's own fsync
    off, so that the figure is the header read and the index transaction);
    rounds interleaved, medians of *n* instances per round.
    """
    out: dict[str, list[float]] = {"big": [], "empty": []}
    for r in range(rounds):
        for label in ("big", "empty") if r % 2 == 0 else ("empty", "big"):
            folder = tmp / f"{backend.name}-p{r}-{label}"
            files = write_corpus(folder / "in", studies=1, series=1, instances=n, size="tiny")
            target = big if label == "big" else backend.empty(folder)
            open_database(target, durable=True)
            migrate(index_db.database.obj)
            ingest = Ingest(InstanceStore(folder / "store", fsync=False))
            times = []
            for path in files:
                t0 = time.perf_counter()
                if not ingest.ingest_file(path, Source("import"), take=True).ok:
                    raise RuntimeError(f"ingest of {path} failed")
                times.append((time.perf_counter() - t0) * 1000)
            out[label].append(median(times))
            shutil.rmtree(folder, ignore_errors=True)
    return out["big"], out["empty"]


def run_backend(backend: Backend, a: argparse.Namespace, cache: Path, tmp: Path) -> dict[str, object]:
    big = big_index(backend, cache, a.instances, a.studies)
    rng = random.Random(1234)
    values = query_values(a.studies, a.queries, rng)
    open_database(big, durable=False)
    (count,) = index_rows(big, 'SELECT COUNT(*) FROM "instance"')[0]
    print(f"{backend.name}: {count:,} instances")
    if a.explain:
        explain(values)
    results: dict[str, object] = {"instances": count, "engine": {}, "cfind": {}, "findscu": {}}
    for name, filters in values.items():
        engine_times(filters[:5])  # warm the cache
        results["engine"][name] = engine_times(filters)
    node = node_on(tmp / f"{backend.name}-big", big)
    empty = node_on(tmp / f"{backend.name}-empty", backend.empty(tmp / f"{backend.name}-e"))
    try:
        for name, filters in values.items():
            ids = [as_identifier(f) for f in filters]
            time_queries(node.dicom_port, NODE_AE, ids[:5])
            results["cfind"][name] = time_queries(node.dicom_port, NODE_AE, ids)
            few = filters[: max(10, a.queries // 5)]
            results["findscu"][name] = (
                findscu_times(node.dicom_port, NODE_AE, few),
                findscu_times(empty.dicom_port, NODE_AE, few),
            )
    finally:
        node.stop()
        empty.stop()
    results["ingest"] = ingest_rates(backend, big, tmp, a.stores, a.rounds)
    results["ingest path"] = ingest_path_times(backend, big, tmp, a.stores, a.rounds)
    return results


def orthanc_reference(tmp: Path, a: argparse.Namespace) -> dict[str, tuple]:
    orthanc = orthanc_with(tmp, a.orthanc_studies)
    try:
        values = query_values(a.orthanc_studies, a.queries, random.Random(99))
        out = {}
        for name, filters in values.items():
            ids = [as_identifier(f) for f in filters]
            time_queries(orthanc.dicom_port, orthanc.ae_title, ids[:5])
            few = filters[: max(10, a.queries // 5)]
            out[name] = (
                time_queries(orthanc.dicom_port, orthanc.ae_title, ids),
                findscu_times(orthanc.dicom_port, orthanc.ae_title, few),
            )
        return out
    finally:
        orthanc.stop()


def _ms(times: list[float]) -> str:
    return f"{median(times):7.2f} /{percentile(times, 95):7.2f}"


def report(results: dict[str, dict], orthanc: dict[str, tuple]) -> Iterator[str]:
    for backend, r in results.items():
        yield f"\n{backend}: {r['instances']:,} instances; ms median / p95"
        yield (
            f"{'query':14} {'matches':>7} {'engine':>16} {'C-FIND (1 assoc)':>17} {'findscu':>16}"
            f" {'findscu, empty':>16} {'target':>7}" + ("  orthanc C-FIND / findscu" if orthanc else "")
        )
        for name, (times, matches) in r["engine"].items():
            cf, _ = r["cfind"][name]
            big_f, empty_f = r["findscu"][name]
            target = TARGETS.get(name)
            verdict = "" if target is None else ("ok" if median(cf) < target else "MISSED")
            line = (
                f"{name:14} {matches / len(times):7.1f} {_ms(times)} {_ms(cf):>17} {_ms(big_f)}"
                f" {_ms(empty_f)} {'<' + str(int(target)) if target else '':>7} {verdict}"
            )
            if name in orthanc:
                ot, of = orthanc[name]
                line += f"  {median(ot[0]):6.2f} / {median(of):6.2f}"
            yield line
        big, empty = r["ingest"]
        rounds = f"big {', '.join(f'{x:.0f}' for x in big)}; empty {', '.join(f'{x:.0f}' for x in empty)}"
        yield (
            f"C-STORE tiny, 1 assoc: big {median(big):.1f} inst/s, empty {median(empty):.1f} inst/s,"
            f" ratio big/empty {median(big) / median(empty):.2f} (rounds: {rounds})"
        )
        big, empty = r["ingest path"]
        rounds = f"big {', '.join(f'{x:.2f}' for x in big)}; empty {', '.join(f'{x:.2f}' for x in empty)}"
        yield (
            f"ingest path in-process: big {median(big):.2f} ms/instance, empty {median(empty):.2f},"
            f" ratio empty/big {median(empty) / median(big):.2f} (round medians: {rounds})"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--studies", type=int, default=20_000)
    ap.add_argument("--backend", default="sqlite,postgresql")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--stores", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--orthanc-studies", type=int, default=200)
    ap.add_argument("--no-orthanc", action="store_true")
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--cache", type=Path)
    a = ap.parse_args(argv)
    cache = a.cache or Path(tempfile.gettempdir()) / f"bench-big-{a.instances}"
    cache.mkdir(parents=True, exist_ok=True)
    from node.dimse import wire

    wire.install(fast_path=True)  # the measuring client without pynetdicom's 1 ms polling (as bench/query.py)
    makers: dict[str, Callable[[Path], Backend]] = {"sqlite": SqliteBackend, "postgresql": PostgresBackend}
    tmp = Path(tempfile.mkdtemp(prefix="bench-big-"))
    results: dict[str, dict] = {}
    try:
        for name in a.backend.split(","):
            backend = makers[name.strip()](cache)
            try:
                results[backend.name] = run_backend(backend, a, cache, tmp)
            finally:
                backend.stop()
        orthanc = {} if a.no_orthanc else orthanc_reference(tmp, a)
        if orthanc:
            n = a.orthanc_studies
            print(f"\northanc: {n} studies / {n * 10} instances, the same query types")
        for line in report(results, orthanc):
            print(line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
