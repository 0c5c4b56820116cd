"""Benchmark of read-through retrieval (issue 12 item 3): a study held only upstream, asked over WADO-RS.

    python -m bench.read_through [--instances 200] [--runs 5]

A CT study of ``--instances`` 512x512x16-bit images (``bench.export.ct_study``)
is held only by Debian's Orthanc (loopback, ``TCP_NODELAY=1``).  Each round,
interleaved so that load from elsewhere falls on every path alike, times
from the request to the first whole instance and to the last:

- ``read-through``: WADO-RS of the study from the node, which retrieves it
  (C-MOVE from Orthanc) and streams each instance as it arrives;
- ``two-step``: what a user does without read-through: ``movescu`` of the
  study into the node, then WADO-RS from the node (first instance = the
  move's duration + the first part of the WADO answer);
- ``orthanc``: WADO-RS from Orthanc directly (the reference);
- ``repeat``: WADO-RS from the node once it holds the study (served locally);
- ``move->storescp``: ``movescu`` of the study from Orthanc into DCMTK's
  ``storescp`` (``TCP_NODELAY=1``, no fsync): the floor of any retrieval
  by C-MOVE from this Orthanc, whatever the receiver does.

Between rounds the study is deleted from the node (``DELETE``), so that the
next read-through is a miss again.  Targets: first instance (read-through)
<= 0.2x two-step; total (read-through) <= 1.1x Orthanc direct.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from pydicom import dcmread

from bench.export import ct_study, warm
from tests.harness import (
    NODE_AE,
    Orthanc,
    RunningNode,
    StoreSCP,
    median,
    node_config,
    nodelay_env,
    storescu,
)

DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def timed_wado(client: httpx.Client, url: str, expected: int) -> tuple[float, float, int]:
    """Seconds to the first whole part and to the end of a multipart WADO-RS answer; parts seen."""
    started = time.perf_counter()
    first = None
    with client.stream("GET", url, headers={"Accept": DICOM}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.read()[:300]!r}")
        boundary = re.search(r"boundary=([^;]+)", r.headers["content-type"]).group(1).strip('"')
        marker = b"\r\n--" + boundary.encode()
        seen = 0
        tail = b""
        head = b""  # the body up to the end of the first part's headers
        for chunk in r.iter_raw():
            window = tail + chunk
            seen += window.count(marker)
            tail = window[-len(marker) :]
            if first is None:
                # The first part is whole once its Content-Length of bytes came after its headers.
                head += chunk
                top, sep, rest = head.partition(b"\r\n\r\n")
                if sep:
                    lengths = [
                        int(line.split(b":")[1])
                        for line in top.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ]
                    # Without a Content-Length of its own, the delimiter after the part ends it.
                    if (len(rest) >= lengths[0]) if lengths else seen >= 1:
                        first = time.perf_counter() - started
    total = time.perf_counter() - started
    if seen != expected:
        raise RuntimeError(f"{url}: {seen} parts, expected {expected}")
    return first or total, total, seen


def movescu_into(destination: str, orthanc: Orthanc, study_uid: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["movescu", "-S", "-aet", "BENCH", "-aec", orthanc.ae_title, "-aem", destination,
         "-k", "0008,0052=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "127.0.0.1", str(orthanc.dicom_port)],
        check=True, capture_output=True, env=nodelay_env(),
    )  # fmt: skip
    return time.perf_counter() - started


def job_seconds(node: RunningNode, study_uid: str) -> float:
    """How long the node's retrieve job of the study ran (claimed to finished), from GET /jobs."""
    import datetime as dt

    r = httpx.get(f"{node.url}/jobs", params={"kind": "retrieve"}, headers=node.auth_headers(), timeout=30)
    (job,) = [j for j in r.json()["jobs"] if j["key"] == study_uid]
    if job["state"] != "done":
        raise RuntimeError(f"retrieve job {job['id']}: {job['state']} {job['message']}")
    started, finished = (dt.datetime.fromisoformat(job[k].rstrip("Z")) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def forget(node: RunningNode, study_uid: str) -> None:
    r = httpx.delete(f"{node.url}/dicom-web/studies/{study_uid}", headers=node.auth_headers(), timeout=60)
    if r.status_code != 204:
        raise RuntimeError(f"DELETE: {r.status_code} {r.text}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench-export"))
    parser.add_argument("--no-fsync", action="store_true", help="[storage].fsync = false (profile)")
    args = parser.parse_args(argv)
    files = ct_study(args.cache / f"ct{args.instances}", "RT0001", args.instances)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    n = len(files)
    with tempfile.TemporaryDirectory(prefix="bench-read-through-") as tmp:
        root = Path(tmp)
        config = node_config(root / "node", storage={"fsync": not args.no_fsync})
        storescp = StoreSCP(root / "storescp")
        modalities = {
            "node": (NODE_AE, config["dicom"]["port"]),
            "storescp": (storescp.ae_title, storescp.port),
        }
        orthanc = Orthanc(root / "orthanc", modalities=modalities).start()
        storescp.start()
        node = None
        try:
            storescu(orthanc.ae_title, orthanc.dicom_port, files[0].parent)
            config["remotes"] = [orthanc.remote(read_through=True)]
            node = RunningNode(root / "node", config).start()
            times: dict[str, list[tuple[float, float]]] = {
                k: []
                for k in ("read-through", "(its job)", "two-step", "orthanc", "repeat", "move->storescp")
            }
            with httpx.Client(timeout=300) as client:
                node_url = f"{node.url}/dicom-web/studies/{study_uid}"
                orthanc_url = f"{orthanc.url}/dicom-web/studies/{study_uid}"
                timed_wado(client, orthanc_url, n)  # warm-up: Orthanc's files in the page cache
                for run in range(args.runs):
                    warm([p for p in (root / "orthanc" / "db").rglob("*") if p.is_file()])
                    first, total, _ = timed_wado(client, node_url, n)
                    times["read-through"].append((first, total))
                    job = job_seconds(node, study_uid)
                    times["(its job)"].append((job, job))
                    first, total, _ = timed_wado(client, node_url, n)
                    times["repeat"].append((first, total))
                    forget(node, study_uid)
                    move = movescu_into(node.ae_title, orthanc, study_uid)
                    first, total, _ = timed_wado(client, node_url, n)
                    times["two-step"].append((move + first, move + total))
                    forget(node, study_uid)
                    first, total, _ = timed_wado(client, orthanc_url, n)
                    times["orthanc"].append((first, total))
                    move = movescu_into(storescp.ae_title, orthanc, study_uid)
                    times["move->storescp"].append((move, move))
                    for f in storescp.files():
                        f.unlink()
                    print(
                        f"round {run + 1}: "
                        + ", ".join(
                            f"{k} {v[-1][0] * 1000:.0f}/{v[-1][1] * 1000:.0f} ms" for k, v in times.items()
                        ),
                        flush=True,
                    )
        finally:
            if node is not None:
                node.stop()
            orthanc.stop()
            storescp.stop()
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(
        f"\nWADO-RS of a {n}-instance CT study ({mb:.1f} MB) held only by Orthanc, median of {args.runs}"
        f"{', node fsync off' if args.no_fsync else ''}"
    )
    print(f"{'path':<14}{'first instance ms':>19}{'last instance ms':>18}")
    med = {k: (median([t[0] for t in v]) * 1000, median([t[1] for t in v]) * 1000) for k, v in times.items()}
    for k, (first, total) in med.items():
        print(f"{k:<14}{first:>19.0f}{total:>18.0f}")
    first_ratio = med["read-through"][0] / med["two-step"][0]
    total_ratio = med["read-through"][1] / med["orthanc"][1]
    print(
        f"first instance: read-through / two-step = {first_ratio:.3f}x (target <= 0.2x) "
        f"{'ok' if first_ratio <= 0.2 else 'MISSED'}"
    )
    print(
        f"total: read-through / Orthanc direct = {total_ratio:.2f}x (target <= 1.1x) "
        f"{'ok' if total_ratio <= 1.1 else 'MISSED'}"
    )
    print(f"repeat (served locally) / Orthanc direct = {med['repeat'][1] / med['orthanc'][1]:.2f}x")
    floor = med["move->storescp"][1]
    print(
        f"C-MOVE floor: Orthanc -> storescp {floor:.0f} ms = {floor / med['orthanc'][1]:.2f}x Orthanc; "
        f"read-through total / that floor = {med['read-through'][1] / floor:.2f}x"
    )


if __name__ == "__main__":
    main()
