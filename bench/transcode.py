"""Transcoding and rendering over WADO-RS: the node beside Orthanc with its GDCM plugin, same run.

    .venv/bin/python -m bench.transcode [--instances 30] [--rounds 5] [--frames 200] [--no-orthanc]
                                        [--only convert|rendered|cget|memory]

Corpus (``bench.corpus``, cached under /tmp/bench-transcode): CT-like
512x512 12-bit instances (``phantom_pixels``, which compress 2-2.5x
losslessly as real CT does), one study each as Explicit VR Little Endian,
JPEG 2000 lossless (openjpeg) and JPEG-LS lossless (CharLS), plus one
multi-frame JPEG-LS instance of ``--frames`` frames.  Both servers hold the
same files; each round asks every instance of a study, one request at a time
over one keep-alive connection, as ``multipart/related;
type="application/dicom"; transfer-syntax=X``, rounds alternating between
the servers:

- JPEG 2000 -> Explicit VR LE, JPEG-LS -> Explicit VR LE, Explicit VR LE ->
  JPEG-LS: instances/s and MB/s of image data (512x512x2 bytes an instance);
- ``/rendered`` (image/jpeg) of the explicit and of the JPEG 2000 CT frames;
- a C-GET that needs transcoding: DCMTK ``getscu +xs`` (JPEG lossless SV1,
  which neither server writes, then the uncompressed syntaxes) of the JPEG
  2000 study, one association per round, files written by getscu to a temp
  folder: instances/s, each server converting to Explicit VR LE;
- peak RSS (VmHWM) growth of each server converting the multi-frame
  instance to Explicit VR LE (memory per request: the node holds one frame).

Orthanc runs with its DICOMweb plugin and Debian's orthanc-gdcm plugin
(library path from ``dpkg -L orthanc-gdcm``) with
``BuiltinDecoderTranscoderOrder = "Before"``: DCMTK for what it codes
(JPEG-LS), GDCM for JPEG 2000, which DCMTK cannot read.  With the plugin
first (Orthanc's default), Orthanc 1.10.1 + GDCM 3.0.21 crashed here encoding
JPEG-LS or RLE (the process dies on the request).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.pixels import as_pixel_options, get_encoder
from pydicom.uid import generate_uid

from bench.corpus import encode_as, make_dataset, phantom_pixels, write
from bench.stow import rss_kb
from tests.harness import Orthanc, RunningNode, median, node_config, nodelay_env

EXPLICIT = "1.2.840.10008.1.2.1"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
CACHE = Path("/tmp/bench-transcode")
IMAGE_BYTES = 512 * 512 * 2


def corpus(instances: int, frames: int) -> dict[str, list[Path]]:
    """The three single-frame studies and the multi-frame file, written once and reused."""
    stamp = CACHE / f"corpus-{instances}-{frames}.json"
    if stamp.exists():
        return {k: [Path(p) for p in v] for k, v in json.loads(stamp.read_text()).items()}
    out: dict[str, list[Path]] = {}
    for syntax in (EXPLICIT, J2K, JLS):
        study = generate_uid()
        series = generate_uid()
        out[syntax] = []
        for n in range(instances):
            ds = make_dataset(
                study_uid=study, series_uid=series, instance_number=n + 1, size="ct", phantom=True
            )
            out[syntax].append(encode_as(ds, syntax, CACHE / syntax / f"{n:04d}.dcm"))
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), size="ct", phantom=True)
    opts = as_pixel_options(ds)
    encoder = get_encoder(JLS)
    codestreams = []
    for n in range(frames):
        import numpy as np

        arr = np.frombuffer(phantom_pixels(512, n % 7), "<u2").reshape(512, 512)
        codestreams.append(encoder.encode(arr, **opts))
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate(codestreams)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JLS
    out["multiframe"] = [write(ds, CACHE / "multiframe" / "mf.dcm")]
    stamp.write_text(json.dumps({k: [str(p) for p in v] for k, v in out.items()}))
    return out


def url_of(path: Path) -> str:
    ds = dcmread(path, stop_before_pixels=True)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    return f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"


def dicom_accept(syntax: str) -> dict[str, str]:
    return {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'}


def run(client: httpx.Client, urls: list[str], headers: dict[str, str], expect: bytes) -> tuple[float, int]:
    """Seconds to GET every URL in turn, and the bytes received; fails on a wrong answer."""
    received = 0
    start = time.perf_counter()
    for url in urls:
        r = client.get(url, headers=headers)
        if r.status_code != 200 or expect not in r.content[:2048]:
            raise RuntimeError(f"{url}: {r.status_code} {r.headers.get('content-type')} {r.content[:200]!r}")
        received += len(r.content)
    return time.perf_counter() - start, received


def compare(name: str, servers: dict[str, httpx.Client], urls: dict[str, list[str]], headers, expect, rounds):
    """Print the rates of *servers*; a reference that dies on the way is reported and dropped."""
    times: dict[str, list[float]] = {s: [] for s in servers}
    for n in range(rounds + 1):  # the first round warms up
        order = list(servers) if n % 2 == 0 else list(reversed(servers))
        for server in order:
            try:
                elapsed, _ = run(servers[server], urls[server], headers, expect)
            except httpx.TransportError as exc:
                if server == "node":
                    raise
                # Seen: Orthanc 1.10.1 segfaulting in libgdcmMSFF (GDCM) on a JPEG 2000 request.
                print(f"{name:28}  {server} died on the way ({exc!r}); dmesg tells why", flush=True)
                del servers[server], times[server]
                continue
            if n:
                times[server].append(elapsed)
    report(name, len(next(iter(urls.values()))), times)


def report(name: str, count: int, times: dict[str, list[float]]) -> None:
    """One line: each server's median rate for *count* instances a round, and node / Orthanc."""
    rates = {s: count / median(t) for s, t in times.items()}
    line = f"{name:28}"
    for s, rate in rates.items():
        line += f"  {s} {rate:6.1f} inst/s {rate * IMAGE_BYTES / 1e6:6.1f} MB/s"
    if "orthanc" in rates:
        line += f"  ratio {rates['node'] / rates['orthanc']:.2f}x"
    print(line, flush=True)


def getscu_seconds(port: int, called_ae: str, study: str, out: Path, count: int) -> float:
    """Seconds for ``getscu +xs`` to fetch *study*; fails unless *count* files came, as Explicit VR LE."""
    out.mkdir(parents=True)
    try:
        start = time.perf_counter()
        result = subprocess.run(
            ["getscu", "+xs", "-aet", "BENCH", "-aec", called_ae, "-k", "0008,0052=STUDY",
             "-k", f"StudyInstanceUID={study}", "-od", str(out), "127.0.0.1", str(port)],
            capture_output=True, text=True, env=nodelay_env(), timeout=600,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        got = sorted(out.iterdir())
        text = result.stdout + result.stderr
        if result.returncode or len(got) != count or "Release Failed" in text:
            raise RuntimeError(
                f"getscu from {called_ae}: {len(got)} of {count} files, exit {result.returncode}: {text}"
            )
        syntax = dcmread(got[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
        if syntax != EXPLICIT:
            raise RuntimeError(f"getscu from {called_ae}: received {syntax}, not {EXPLICIT}")
        return elapsed
    finally:
        shutil.rmtree(out, ignore_errors=True)


def compare_cget(targets: dict[str, tuple[int, str]], study: str, count: int, rounds: int, tmp: Path) -> None:
    """Instances/s of getscu +xs of the JPEG 2000 study from each server (name -> (port, AE title))."""
    times: dict[str, list[float]] = {s: [] for s in targets}
    for n in range(rounds + 1):  # the first round warms up
        order = list(targets) if n % 2 == 0 else list(reversed(targets))
        for server in order:
            port, ae = targets[server]
            elapsed = getscu_seconds(port, ae, study, tmp / f"{server}-{n}", count)
            if n:
                times[server].append(elapsed)
    report("C-GET getscu +xs, JPEG 2000", count, times)


def load_orthanc(orthanc: Orthanc, files: list[Path]) -> None:
    with httpx.Client(base_url=orthanc.url, timeout=120) as c:
        for path in files:
            r = c.post("/instances", content=path.read_bytes())
            r.raise_for_status()


def memory(name: str, pid: int, base: str, url: str, frames: int) -> None:
    before = rss_kb(pid, "VmHWM")
    start = time.perf_counter()
    try:
        with httpx.stream("GET", base + url, headers=dicom_accept(EXPLICIT), timeout=600) as r:
            r.raise_for_status()
            received = sum(len(chunk) for chunk in r.iter_bytes())
    except httpx.HTTPError as exc:
        print(f"  {name:8} failed: {exc!r} (process alive: {Path(f'/proc/{pid}').exists()})", flush=True)
        return
    elapsed = time.perf_counter() - start
    after = rss_kb(pid, "VmHWM")
    decoded = frames * IMAGE_BYTES / 2**20
    print(
        f"  {name:8} {frames} frames ({decoded:.0f} MiB decoded) in {elapsed:.2f} s: peak RSS "
        f"{before / 1024:.0f} -> {after / 1024:.0f} MiB (+{(after - before) / 1024:.0f}); "
        f"{received / 2**20:.0f} MiB received",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--frames", type=int, default=200, help="of the multi-frame instance")
    p.add_argument("--no-orthanc", action="store_true")
    p.add_argument("--only", choices=("convert", "rendered", "cget", "memory"), help="run one part")
    a = p.parse_args(argv)
    files = corpus(a.instances, a.frames)
    every = [f for group in files.values() for f in group]
    for path in every:  # warm the page cache
        path.read_bytes()
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-transcode-run-{os.getpid()}"
    node = RunningNode(root / "node", node_config(root / "node", storage={"fsync": False})).start()
    orthanc = (
        None if a.no_orthanc else Orthanc(root / "orthanc", gdcm=True, builtin_codecs_first=True).start()
    )
    try:
        for syntax_files in files.values():
            result = node.cli("import", "-q", *map(str, syntax_files))
            if result.returncode:
                raise RuntimeError(result.stdout + result.stderr)
        if orthanc:
            load_orthanc(orthanc, every)
        urls = {k: [url_of(f) for f in v] for k, v in files.items()}
        servers = {"node": httpx.Client(base_url=node.url, timeout=300)}
        if orthanc:
            servers["orthanc"] = httpx.Client(base_url=orthanc.url, timeout=300)
        print(
            f"{a.instances} CT instances 512x512x16 per conversion, median of {a.rounds} rounds "
            f"(MB/s of image data; machine shared, load {os.getloadavg()[0]:.1f})"
        )
        same = {s: None for s in servers}
        conversions = (
            ("JPEG 2000 -> Explicit VR LE", J2K, EXPLICIT),
            ("JPEG-LS -> Explicit VR LE", JLS, EXPLICIT),
            ("Explicit VR LE -> JPEG-LS", EXPLICIT, JLS),
        )
        for name, source, target in conversions if a.only in (None, "convert") else ():
            expect = (target + "\0" * (len(target) % 2)).encode()  # the file meta names the syntax sent
            compare(name, servers, {s: urls[source] for s in same}, dicom_accept(target), expect, a.rounds)
        renderings = (("/rendered, explicit CT", EXPLICIT), ("/rendered, JPEG 2000 CT", J2K))
        for name, source in renderings if a.only in (None, "rendered") else ():
            rendered = {s: [u + "/rendered" for u in urls[source]] for s in same}
            compare(name, servers, rendered, {"Accept": "image/jpeg"}, b"\xff\xd8", a.rounds)
        if a.only in (None, "cget"):
            targets = {"node": (node.dicom_port, node.ae_title)}
            if orthanc:
                targets["orthanc"] = (orthanc.dicom_port, orthanc.ae_title)
            study = str(dcmread(files[J2K][0], stop_before_pixels=True).StudyInstanceUID)
            compare_cget(targets, study, len(files[J2K]), a.rounds, root / "getscu")
        if a.only not in (None, "memory"):
            return
        print("memory per request: one multi-frame JPEG-LS instance to Explicit VR LE (VmHWM)")
        (mf,) = urls["multiframe"]
        memory("node", node.proc.pid, node.url, mf, a.frames)
        if orthanc and "orthanc" in servers:
            memory("orthanc", orthanc.proc.pid, orthanc.url, mf, a.frames)
    finally:
        node.stop()
        if orthanc:
            orthanc.stop()


if __name__ == "__main__":
    main()
