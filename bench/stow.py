"""STOW-RS ingest benchmark: the node against Orthanc's DICOMweb plugin, and against C-STORE.

``python -m bench.stow [--ct 200] [--tiny 1000] [--per-body 50] [--big-gb 1.0] [--workers 1]``

For the CT-size (512 KiB) and tiny (32x32) corpora, bodies of 50 instances
are POSTed sequentially and by 4 concurrent clients, to the node and to
Orthanc (same bodies, fresh corpora per run so nothing is a duplicate).
The same corpus is also C-STOREd into a fresh node with DCMTK storescu
(TCP_NODELAY). Then one ~1 GB body, generated on the fly from a repeated
instance with distinct UIDs and streamed by the client, is sent to a fresh
node whose peak RSS (VmHWM) is read from /proc.  Prints instances/s, MB/s,
request latency (median, p95) and the ratios measured in this run.
``--workers N`` runs the STOW-RS node with ``[server].workers = N``.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write_corpus
from tests.harness import (
    Orthanc,
    RunningNode,
    median,
    node_config,
    nodelay_env,
    orthanc_available,
    percentile,
)

BOUNDARY = "benchBoundary0123456789"
CTYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def body_of(paths: list[Path]) -> bytes:
    out = io.BytesIO()
    for p in paths:
        out.write(f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        out.write(p.read_bytes())
    out.write(f"\r\n--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def make_bodies(folder: Path, count: int, size: str, per_body: int) -> tuple[list[bytes], list[Path]]:
    studies = max(1, count // per_body)
    paths = write_corpus(folder, studies=studies, series=1, instances=per_body, size=size)
    bodies = [body_of(paths[i : i + per_body]) for i in range(0, len(paths), per_body)]
    return bodies, paths


def rss_kb(pid: int, key: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def post_round(url: str, bodies: list[bytes], headers: dict[str, str]) -> list[float]:
    """POST *bodies* at once, one client thread each; return the request latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(body: bytes) -> None:
        with httpx.Client(timeout=600) as client:
            t0 = time.perf_counter()
            r = client.post(url, content=body, headers={"Content-Type": CTYPE, **headers})
            dt = time.perf_counter() - t0
        with lock:
            latencies.append(dt)
            if r.status_code != 200:
                errors.append(f"{r.status_code}: {r.text[:200]}")

    threads = [threading.Thread(target=one, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{url}: {len(errors)} requests failed, first: {errors[0]}")
    return latencies


class Tally:
    """Wall time and latencies of one target, summed over interleaved rounds."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.latencies: list[float] = []
        self.instances = 0
        self.bytes = 0

    def run(self, url: str, bodies: list[bytes], per_body: int) -> None:
        t0 = time.perf_counter()
        self.latencies += post_round(url, bodies, {})
        self.wall += time.perf_counter() - t0
        self.instances += len(bodies) * per_body
        self.bytes += sum(len(b) for b in bodies)


def report(label: str, t: Tally) -> float:
    ips = t.instances / t.wall
    med, p95 = median(t.latencies) * 1000, percentile(t.latencies, 95) * 1000
    print(
        f"  {label:<28} {ips:8.1f} inst/s {t.bytes / t.wall / 1e6:8.1f} MB/s   "
        f"request median {med:7.0f} ms  p95 {p95:7.0f} ms"
    )
    return ips


def storescu_rate(node: RunningNode, paths: list[Path]) -> float:
    for p in paths:  # warm the page cache
        p.read_bytes()
    folder = paths[0].parent.parent
    t0 = time.perf_counter()
    subprocess.run(
        [
            "storescu",
            "-aec",
            node.ae_title,
            "+sd",
            "+r",
            "-nh",
            "127.0.0.1",
            str(node.dicom_port),
            str(folder),
        ],
        check=True,
        capture_output=True,
        env=nodelay_env(),
    )
    wall = time.perf_counter() - t0
    assert node.count() == len(paths), node.count()
    return wall


def corpus_round(
    root: Path, size: str, count: int, per_body: int, use_orthanc: bool, workers: int = 1
) -> None:
    print(f"\n{size} corpus: {count} instances per run, {per_body} per body, node with {workers} worker(s)")
    config = node_config(root / f"node-{size}", server={"workers": workers})
    node = RunningNode(root / f"node-{size}", config).start(timeout=120)
    orthanc = Orthanc(root / f"orthanc-{size}").start() if use_orthanc else None
    try:
        for clients in (1, 4):
            # Fresh corpora per target and run: nothing is ever a duplicate.
            node_bodies, _ = make_bodies(root / f"{size}-n{clients}", count, size, per_body)
            o_bodies, _ = (
                make_bodies(root / f"{size}-o{clients}", count, size, per_body) if orthanc else ([], [])
            )
            ours, theirs = Tally(), Tally()
            # Rounds alternate between the two servers so that load from elsewhere hits both alike.
            for i in range(0, len(node_bodies), clients):
                ours.run(f"{node.url}/dicom-web/studies", node_bodies[i : i + clients], per_body)
                if orthanc is not None:
                    theirs.run(f"{orthanc.url}/dicom-web/studies", o_bodies[i : i + clients], per_body)
            label = "sequential" if clients == 1 else f"{clients} concurrent clients"
            rate = report(f"node, {label}", ours)
            if orthanc is not None:
                ref = report(f"Orthanc, {label}", theirs)
                print(f"  {'ratio node/Orthanc':<28} {rate / ref:8.2f}x")
        # C-STORE of the first corpus into a fresh node.
        dimse_node = RunningNode(root / f"dimse-{size}", node_config(root / f"dimse-{size}")).start()
        try:
            paths = sorted((root / f"{size}-n1").rglob("*.dcm"))
            wall = storescu_rate(dimse_node, paths)
            nbytes = sum(p.stat().st_size for p in paths)
            cstore = len(paths) / wall
            print(f"  {'node, C-STORE (storescu)':<28} {cstore:8.1f} inst/s {nbytes / wall / 1e6:8.1f} MB/s")
        finally:
            dimse_node.stop()
    finally:
        node.stop()
        if orthanc is not None:
            orthanc.stop()


def big_body(total_bytes: int) -> tuple[Iterator[bytes], int]:
    """A multipart body of ~total_bytes: one CT instance repeated with distinct UIDs, made lazily."""
    placeholder = "1.2.826.0.1.3680043.10.999.100000000000"
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=placeholder, size="ct")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    template = buf.getvalue()
    head = f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    count = max(1, total_bytes // (len(template) + len(head)))

    def gen() -> Iterator[bytes]:
        for i in range(count):
            uid = f"1.2.826.0.1.3680043.10.999.{100000000001 + i}"
            yield head + template.replace(placeholder.encode(), uid.encode())
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return gen(), count


def big_round(root: Path, gigabytes: float) -> None:
    print(f"\none {gigabytes:g} GB body (streamed by the client, generated on the fly)")
    node = RunningNode(root / "node-big", node_config(root / "node-big")).start()
    try:
        assert node.proc is not None
        base = rss_kb(node.proc.pid, "VmRSS")
        body, count = big_body(int(gigabytes * 1e9))
        t0 = time.perf_counter()
        r = httpx.post(
            f"{node.url}/dicom-web/studies", content=body, headers={"Content-Type": CTYPE}, timeout=3600
        )
        wall = time.perf_counter() - t0
        peak = rss_kb(node.proc.pid, "VmHWM")
        assert r.status_code == 200, r.text[:300]
        assert node.count() == count
        print(
            f"  {count} instances in {wall:.1f}s "
            f"({count / wall:.1f} inst/s, {gigabytes * 1e3 / wall:.1f} MB/s)"
        )
        print(
            f"  node RSS before {base / 1024:.1f} MB, peak (VmHWM) {peak / 1024:.1f} MB, "
            f"growth {(peak - base) / 1024:.1f} MB (target: peak < 150 MB)"
        )
    finally:
        node.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ct", type=int, default=400, help="CT-size instances per run")
    p.add_argument("--tiny", type=int, default=1000, help="tiny instances per run")
    p.add_argument("--per-body", type=int, default=50)
    p.add_argument("--big-gb", type=float, default=1.0, help="size of the one big body (0: skip)")
    p.add_argument("--no-orthanc", action="store_true")
    p.add_argument("--workers", type=int, default=1, help="[server].workers of the STOW-RS node")
    a = p.parse_args(argv)
    use_orthanc = not a.no_orthanc and orthanc_available()
    if not use_orthanc:
        print("Orthanc not available: no reference figures")
    with tempfile.TemporaryDirectory(prefix="bench-stow-") as tmp:
        root = Path(tmp)
        if a.ct:
            corpus_round(root, "ct", a.ct, a.per_body, use_orthanc, a.workers)
        if a.tiny:
            corpus_round(root, "tiny", a.tiny, a.per_body, use_orthanc, a.workers)
        if a.big_gb:
            big_round(root, a.big_gb)


if __name__ == "__main__":
    main()
