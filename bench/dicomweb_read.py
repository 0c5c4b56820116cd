"""QIDO-RS latency and WADO-RS throughput of the node beside Orthanc (DICOMweb plugin), same run.

    python -m bench.dicomweb_read [--studies 10000] [--queries 200] [--ct 100] [--runs 5]

Loads N studies of one tiny instance each, plus one CT study of --ct
512x512x16-bit instances, into a node and into Orthanc (both with storescu,
TCP_NODELAY=1), then times over HTTP keep-alive (one httpx.Client each):

- QIDO-RS: by AccessionNumber, by PatientID, PatientName wildcard, a 31-day
  StudyDate range, the series of a study (median and p95 per query kind);
- WADO-RS: retrieve of the CT study as multipart/related (transfer-syntax=*)
  from both, and as a ZIP (node: Accept application/zip; Orthanc: its REST
  /studies/{id}/archive), in MB/s.

Ratios are node / Orthanc: latency target <= 1.0, throughput target >= 0.7.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.corpus import write_corpus
from tests.harness import Orthanc, RunningNode, median, node_config, nodelay_env, percentile

MULTIPART_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
START = dt.date(2024, 1, 1)


def storescu(ae_title: str, port: int, folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["storescu", "-aec", ae_title, "+sd", "+r", "-nh", "127.0.0.1", str(port), str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=nodelay_env(),
    )


def load(node: RunningNode, orthanc: Orthanc, folders: list[Path]) -> None:
    """storescu every folder into both servers at once (one storescu per server)."""
    for folder in folders:
        t0 = time.monotonic()
        procs = [
            storescu(node.ae_title, node.dicom_port, folder),
            storescu(orthanc.ae_title, orthanc.dicom_port, folder),
        ]
        for p in procs:
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"storescu failed: {err.decode(errors='replace')[-2000:]}")
        print(f"  loaded {folder.name} into both in {time.monotonic() - t0:.0f}s", flush=True)


def warm(*folders: Path) -> None:
    """Read the servers' files once so that page cache, not the disk, is measured."""
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                with path.open("rb") as f:
                    while f.read(1 << 20):
                        pass


def timed(client: httpx.Client, urls: list[str], check: Callable[[httpx.Response], None]) -> list[float]:
    """Latency (ms) of GETting each url in turn."""
    for url in urls[:5]:  # warm-up: connection, caches
        check(client.get(url))
    out = []
    for url in urls:
        t0 = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        check(r)
    return out


def expect(count: int | None) -> Callable[[httpx.Response], None]:
    def check(r: httpx.Response) -> None:
        r.raise_for_status()
        if count is not None and len(r.json()) != count:
            raise SystemExit(f"{r.url}: expected {count} matches, got {len(r.json())}")

    return check


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch(client: httpx.Client, url: str, headers: dict[str, str], pid: int) -> tuple[float, float, int]:
    """Stream *url* (body read chunk by chunk, not kept): MB/s, server CPU seconds, bytes."""
    cpu0, t0, size = cpu_seconds(pid), time.perf_counter(), 0
    with client.stream("GET", url, headers=headers) as r:
        r.raise_for_status()
        for chunk in r.iter_raw(1 << 20):
            size += len(chunk)
    return size / (time.perf_counter() - t0) / 1e6, cpu_seconds(pid) - cpu0, size


def compare(runs: int, node: tuple, orthanc: tuple) -> list[tuple[float, float, int]]:
    """Median (MB/s, server CPU s per GB, bytes) of each side, runs interleaved so both see the same load.

    *node* and *orthanc* are (client, url, headers, pid); the first round is a warm-up.
    """
    results: list[list[tuple[float, float, int]]] = [[], []]
    for n in range(runs + 1):
        for side, args in enumerate((node, orthanc)):
            rate, cpu, size = fetch(*args)
            if n:
                results[side].append((rate, cpu / (size / 1e9), size))
    return [(median([r[0] for r in rs]), median([r[1] for r in rs]), rs[0][2]) for rs in results]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", type=int, default=10_000, help="tiny one-instance studies (default 10000)")
    p.add_argument("--queries", type=int, default=200, help="requests per QIDO query kind")
    p.add_argument("--ct", type=int, default=100, help="instances in the CT study retrieved by WADO-RS")
    p.add_argument("--runs", type=int, default=7, help="timed WADO-RS retrieves per form")
    p.add_argument("--workdir", type=Path, default=None)
    a = p.parse_args(argv)
    rng = random.Random(5)

    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    print(f"work folder {work}")
    t0 = time.monotonic()
    tiny = write_corpus(work / "tiny", studies=a.studies, series=1, instances=1, size="tiny")
    ct = write_corpus(
        work / "ct", studies=1, instances=a.ct, size="ct", accession_prefix="CT", patient_prefix="CTPAT"
    )
    print(f"wrote {len(tiny)} tiny + {len(ct)} CT files in {time.monotonic() - t0:.0f}s", flush=True)

    node = RunningNode(work / "node", node_config(work / "node", storage={"fsync": False}))
    orthanc = Orthanc(work / "orthanc")
    node.start()
    orthanc.start()
    try:
        load(node, orthanc, [work / "tiny", work / "ct"])
        assert node.count("studies") == a.studies + 1, node.health()
        n_orthanc = httpx.get(f"{orthanc.url}/statistics").json()["CountStudies"]
        assert n_orthanc == a.studies + 1, n_orthanc

        with (
            httpx.Client(base_url=node.url + "/dicom-web", timeout=120) as nc,
            httpx.Client(base_url=orthanc.url + "/dicom-web", timeout=120) as oc,
        ):
            qido(nc, oc, a, rng)
            wado(nc, oc, a, node, orthanc, work)
    finally:
        node.stop()
        orthanc.stop()


def qido(nc: httpx.Client, oc: httpx.Client, a: argparse.Namespace, rng: random.Random) -> None:
    picks = [rng.randrange(a.studies) for _ in range(a.queries)]
    # Series of a study needs study UIDs: ask the node (same corpus in both).
    uids = {}
    for pick in set(picks):
        (match,) = nc.get("/studies", params={"AccessionNumber": f"ACC{pick:05d}"}).json()
        uids[pick] = match["0020000D"]["Value"][0]
    days = max(1, a.studies - 31)
    ranges = []
    for _ in range(a.queries):
        first = START + dt.timedelta(days=rng.randrange(days))
        ranges.append(f"{first:%Y%m%d}-{first + dt.timedelta(days=30):%Y%m%d}")
    kinds = [
        ("AccessionNumber", [f"/studies?AccessionNumber=ACC{n:05d}" for n in picks], 1),
        ("PatientID", [f"/studies?PatientID=PAT{n:05d}" for n in picks], 1),
        # PATIENT^0123* matches 10 of 10,000 names.
        ("PatientName wildcard", [f"/studies?PatientName=PATIENT%5E{n // 10:04d}*" for n in picks], None),
        ("StudyDate 31-day range", [f"/studies?StudyDate={r}" for r in ranges], None),
        ("series of a study", [f"/studies/{uids[n]}/series" for n in picks], 1),
    ]
    print(f"\nQIDO-RS latency, {a.studies} studies, {a.queries} requests each (ms; ratio = node / Orthanc)")
    print(f"{'query':<24}{'node med':>10}{'p95':>8}{'Orthanc med':>13}{'p95':>8}{'ratio med':>11}{'p95':>7}")
    for name, urls, count in kinds:
        node_ms = timed(nc, urls, expect(count))
        orthanc_ms = timed(oc, urls, expect(count))
        nm, n95 = median(node_ms), percentile(node_ms, 95)
        om, o95 = median(orthanc_ms), percentile(orthanc_ms, 95)
        verdict = "ok" if nm <= om else "MISSED"
        figures = f"{nm:>10.2f}{n95:>8.2f}{om:>13.2f}{o95:>8.2f}{nm / om:>10.2f}x{n95 / o95:>6.2f}x"
        print(f"{name:<24}{figures}  {verdict}")


def wado(
    nc: httpx.Client, oc: httpx.Client, a: argparse.Namespace, node: RunningNode, orthanc: Orthanc, work: Path
) -> None:
    (match,) = nc.get("/studies", params={"AccessionNumber": "CT00000"}).json()
    study = match["0020000D"]["Value"][0]
    (found,) = httpx.post(f"{orthanc.url}/tools/lookup", content=study).json()
    warm(node.storage, orthanc.root / "db")
    print(f"\nWADO-RS retrieve of a {a.ct}-instance CT study, median of {a.runs}, interleaved", end="")
    print(" (MB/s; ratio = node / Orthanc)")
    url = f"/studies/{study}"
    mp = {"Accept": MULTIPART_ANY}
    (node_mp, node_cpu, size), (orthanc_mp, orthanc_cpu, osize) = compare(
        a.runs, (nc, url, mp, node.proc.pid), (oc, url, mp, orthanc.proc.pid)
    )
    print(rates_line("multipart", node_mp, orthanc_mp), f"({size / 1e6:.1f} / {osize / 1e6:.1f} MB)")
    print(f"{'':<10} server CPU per GB: node {node_cpu:.2f} s, Orthanc {orthanc_cpu:.2f} s")
    with httpx.Client(base_url=orthanc.url, timeout=300) as rest:
        (node_zip, node_cpu, zsize), (orthanc_zip, orthanc_cpu, ozsize) = compare(
            a.runs,
            (nc, url, {"Accept": "application/zip"}, node.proc.pid),
            (rest, f"/studies/{found['ID']}/archive", {}, orthanc.proc.pid),
        )
    # Rates of the uncompressed payload (archives differ in compression).
    node_rate, orthanc_rate = node_zip * size / zsize, orthanc_zip * osize / ozsize
    print(
        rates_line("zip", node_rate, orthanc_rate),
        f"(archives {zsize / 1e6:.1f} / {ozsize / 1e6:.1f} MB; rates of the DICOM payload)",
    )
    node_cpu, orthanc_cpu = node_cpu * zsize / size, orthanc_cpu * ozsize / osize
    print(f"{'':<10} server CPU per GB of DICOM payload: node {node_cpu:.2f} s, Orthanc {orthanc_cpu:.2f} s")


def rates_line(form: str, node: float, orthanc: float) -> str:
    verdict = "ok" if node >= 0.7 * orthanc else "MISSED"
    return f"{form:<10} node {node:8.0f}  Orthanc {orthanc:8.0f}  ratio {node / orthanc:.2f}x  {verdict}"


if __name__ == "__main__":
    main()
