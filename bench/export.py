"""Benchmark of the ZIP export against the pipeline it replaces.

    python -m bench.export [--instances 200] [--runs 3] [--level 3] [--big 4000]

1. End to end: a CT study held by an upstream PACS (DCMTK dcmqrscp), from
   ``POST /accessions/{acc}/zip`` to the downloaded archive, beside the
   Medialog pipeline on the same study: ``movescu`` into a folder, ``zip -r``
   at the same level, delete the folder.  Then a cached GET.
2. Archive building MB/s at levels 0 and 3 (``node.zipstream``) against
   ``zip -0`` / ``zip -3`` of the same files.
3. Peak RSS of the node exporting the study and a ~2 GB study (``--big``
   instances; 0 skips it): it should not grow with the study.

Synthetic CT pixel data (512x512x16 bit, 12 bits stored): a noisy body in
air, which deflate level 3 packs to about a third (as Medialog measured on
real studies: 100 MB into 33.5 MB).
Corpora are generated once under ``--cache`` (default /tmp/bench-export).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from tests.harness import (
    NODE_AE,
    QRSCP,
    Orthanc,
    RunningNode,
    free_port,
    median,
    node_config,
    nodelay_env,
    orthanc_available,
    percentile,
)

PIPELINE_AE = "MOVESCU"


def ct_study(folder: Path, accession: str, instances: int) -> list[Path]:
    """A CT study of *instances* 512 KiB images (generated once, reused)."""
    import numpy as np  # installed with the test extra (dicomweb-client needs it)

    marker = folder.with_name(folder.name + ".complete")
    if marker.exists():
        return sorted(folder.glob("*.dcm"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    # A body (disc) of soft tissue with gentle gradients and noise (sigma 12),
    # air around it: deflate level 3 keeps about a third, as on real CT.
    y, x = np.mgrid[0:512, 0:512]
    body = ((x - 256) ** 2 + (y - 256) ** 2) < 230**2
    base = np.where(body, 1000 + x // 8 + y // 16, 0)
    rng = np.random.default_rng(instances)
    paths = []
    for i in range(instances):
        ds = make_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            accession=accession,
            patient_id=f"P{accession}",
            instance_number=i + 1,
            size="ct",
        )
        noise = rng.normal(0, 12, (512, 512)).astype(np.int32) * body
        ds.PixelData = np.clip(base + noise, 0, 4095).astype("<u2").tobytes()
        paths.append(write(ds, folder / f"{i:05d}.dcm"))
    marker.touch()
    return paths


def warm(paths: list[Path]) -> None:
    for p in paths:
        with p.open("rb") as fh:
            while fh.read(1 << 20):
                pass


def run(cmd: list[str], **kw) -> None:
    subprocess.run(
        cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=nodelay_env(), **kw
    )


def pipeline(qr: QRSCP, accession: str, level: int, work: Path, port: int) -> tuple[float, int]:
    """movescu into a folder, zip -r, delete the folder (as Medialog does); seconds and ZIP size."""
    start = time.perf_counter()
    folder = work / accession
    folder.mkdir(parents=True)
    run(
        ["movescu", "-q", "-S", "-k", "0008,0052=STUDY", "-k", f"0008,0050={accession}", "+xa"]
        + ["-od", str(folder), "-aet", PIPELINE_AE, "+P", str(port), "-aec", qr.ae_title]
        + ["127.0.0.1", str(qr.port)]
    )
    archive = work / f"{accession}.zip"
    run(["zip", "-q", "-r", f"-{level}", str(archive), accession], cwd=work)
    shutil.rmtree(folder)
    elapsed = time.perf_counter() - start
    size = archive.stat().st_size
    archive.unlink()
    return elapsed, size


def node_export(node: RunningNode, accession: str, out: Path) -> float:
    """POST, poll GET until 200, download: seconds."""
    client = httpx.Client(base_url=node.url, timeout=600)
    start = time.perf_counter()
    r = client.post(f"/accessions/{accession}/zip")
    assert r.status_code in (200, 202), r.text
    delay = 0.01
    while True:
        with client.stream("GET", f"/accessions/{accession}/zip") as r:
            if r.status_code == 200:
                with out.open("wb") as fh:
                    for chunk in r.iter_bytes(1 << 20):
                        fh.write(chunk)
                break
            assert r.status_code == 202, r.read()
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)  # poll soon, then less often
    return time.perf_counter() - start


def cached_get(node: RunningNode, accession: str, out: Path) -> float:
    start = time.perf_counter()
    with httpx.stream("GET", f"{node.url}/accessions/{accession}/zip", timeout=600) as r:
        assert r.status_code == 200
        with out.open("wb") as fh:
            for chunk in r.iter_bytes(1 << 20):
                fh.write(chunk)
    return time.perf_counter() - start


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def fmt(values: list[float]) -> str:
    return f"median {median(values):.3f}s p95 {percentile(values, 95):.3f}s (n={len(values)})"


def bench_end_to_end(args, root: Path, files: list[Path], accession: str) -> None:
    print(f"\n== end to end: {len(files)}-instance CT study upstream (dcmqrscp), level {args.level} ==")
    node_port, pipe_port = free_port(), free_port()
    qr = QRSCP(root / "qr", peers=((NODE_AE, node_port), (PIPELINE_AE, pipe_port))).start()
    try:
        qr.load(*files)
        pipe_times, node_times, cached = [], [], []
        size_pipe = size_node = 0
        for i in range(args.runs):
            t, size_pipe = pipeline(qr, accession, args.level, root / f"pipe{i}", pipe_port)
            pipe_times.append(t)
            nroot = root / f"node{i}"
            shutil.rmtree(nroot, ignore_errors=True)
            node = RunningNode(
                nroot,
                node_config(
                    nroot,
                    dicom={"port": node_port},
                    export={"compression": args.level},
                    remotes=[qr.remote(accession_prefixes=[accession[:2]])],
                ),
            ).start()
            try:
                out = root / "node.zip"
                node_times.append(node_export(node, accession, out))
                size_node = out.stat().st_size
                for _ in range(3):
                    cached.append(cached_get(node, accession, out))
            finally:
                node.stop()
                shutil.rmtree(nroot, ignore_errors=True)
        mp, mn, mc = median(pipe_times), median(node_times), median(cached)
        print(f"pipeline (movescu + zip -r -{args.level} + rm): {fmt(pipe_times)}, zip {size_pipe} bytes")
        print(f"node POST -> downloaded ZIP:             {fmt(node_times)}, zip {size_node} bytes")
        print(f"node cached GET:                         {fmt(cached)}")
        print(f"ratio end to end (pipeline / node): {mp / mn:.2f}x  (target >= 2)")
        print(f"ratio cached GET (pipeline / GET):  {mp / mc:.1f}x  (target >= 10)")
    finally:
        qr.stop()


def bench_building(args, root: Path, files: list[Path]) -> None:
    from node.zipstream import write_zip

    total = sum(p.stat().st_size for p in files)
    print(f"\n== archive building: {len(files)} files, {total / 1e6:.0f} MB (page cache warm) ==")
    src = files[0].parent
    entries = [(f"ACC/{p.name}", p) for p in files]
    for level in (0, 3):
        ours, theirs = [], []
        for _ in range(args.runs):
            warm(files)
            out = root / "build.zip"
            start = time.perf_counter()
            with out.open("wb") as fh:
                write_zip(entries, fh, level)
            ours.append(time.perf_counter() - start)
            out.unlink()
            warm(files)
            start = time.perf_counter()
            run(["zip", "-q", "-r", f"-{level}", str(out), src.name], cwd=src.parent)
            theirs.append(time.perf_counter() - start)
            out.unlink()
        mb_ours, mb_zip = total / median(ours) / 1e6, total / median(theirs) / 1e6
        print(
            f"level {level}: node.zipstream {mb_ours:.0f} MB/s, zip -{level} {mb_zip:.0f} MB/s, "
            f"ratio {mb_ours / mb_zip:.2f} (target >= 1.0); runs {[round(t, 3) for t in ours]} vs "
            f"{[round(t, 3) for t in theirs]}"
        )
    if orthanc_available():
        times = orthanc_archive(root, files, args.runs)
        print(
            f"reference: Orthanc's study archive (GET /studies/{{id}}/archive) "
            f"{total / median(times) / 1e6:.0f} MB/s"
        )


def orthanc_archive(root: Path, files: list[Path], runs: int) -> list[float]:
    """Seconds for Orthanc to produce its archive of the same study (GET /studies/{id}/archive)."""
    orthanc = Orthanc(root / "orthanc").start()
    try:
        run(
            [
                "storescu",
                "-aec",
                orthanc.ae_title,
                "-nh",
                "127.0.0.1",
                str(orthanc.dicom_port),
                *map(str, files),
            ]
        )
        (study_id,) = httpx.get(f"{orthanc.url}/studies").json()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            with httpx.stream("GET", f"{orthanc.url}/studies/{study_id}/archive", timeout=600) as r:
                assert r.status_code == 200
                for _chunk in r.iter_bytes(1 << 20):
                    pass
            times.append(time.perf_counter() - start)
        return times
    finally:
        orthanc.stop()


def bench_rss(args, root: Path, studies: list[tuple[str, list[Path]]]) -> None:
    print("\n== peak RSS of the node exporting a local study (VmHWM) ==")
    rows = []
    for accession, files in studies:
        nroot = root / f"rss-{accession}"
        shutil.rmtree(nroot, ignore_errors=True)
        node = RunningNode(
            nroot, node_config(nroot, export={"compression": args.level}, storage={"fsync": False})
        )
        imported = node.cli("import", "-q", str(files[0].parent), timeout=3600)
        assert imported.returncode == 0, imported.stderr
        node.start()
        try:
            before = vm_hwm_kib(node.proc.pid)
            out = root / "rss.zip"
            t = node_export(node, accession, out)
            after = vm_hwm_kib(node.proc.pid)
            size = sum(p.stat().st_size for p in files)
            rows.append((len(files), size, before, after, t))
            out.unlink()
        finally:
            node.stop()
            shutil.rmtree(nroot, ignore_errors=True)
    for n, size, before, after, t in rows:
        print(
            f"{n:5d} instances, {size / 1e9:.2f} GB: peak RSS {after / 1024:.0f} MiB "
            f"(idle node {before / 1024:.0f} MiB), export {t:.1f}s = {size / t / 1e6:.0f} MB/s"
        )
    if len(rows) > 1:
        print(f"peak RSS ratio big/small: {rows[-1][3] / rows[0][3]:.2f} (flat = ~1.0)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--level", type=int, default=3)
    p.add_argument("--big", type=int, default=4000, help="instances of the RSS study (0: skip)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bench-export"))
    p.add_argument("--only", choices=["e2e", "build", "rss"], action="append")
    args = p.parse_args(argv)
    only = set(args.only or ["e2e", "build", "rss"])
    accession = "CN200"
    files = ct_study(args.cache / f"ct{args.instances}", accession, args.instances)
    print(f"study {accession}: {len(files)} instances, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB")
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        root = Path(tmp)
        if "e2e" in only:
            warm(files)
            bench_end_to_end(args, root, files, accession)
        if "build" in only:
            bench_building(args, root, files)
        if "rss" in only:
            studies = [(accession, files)]
            if args.big:
                big = ct_study(args.cache / f"ct{args.big}", "CN4000", args.big)
                studies.append(("CN4000", big))
            bench_rss(args, root, studies)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
