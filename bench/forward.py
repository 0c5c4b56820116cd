"""Store-and-forward benchmark: storescu -> node -> storescp, beside storescu -> storescp.

    python -m bench.forward [--instances 1000] [--rounds 3] [--size ct]

Each round, alternately:

- reference: DCMTK ``storescu`` sends the corpus straight to a fresh
  ``storescp`` (TCP_NODELAY=1, ``+B``); time from start to storescu's exit
  (storescp has written each file before it answers);
- node: a fresh node with that kind of ``storescp`` as a ``forward = true``
  remote; ``storescu`` sends the corpus to the node; time from the start
  to the moment the last file exists at the remote (its ``forwarded`` count
  in ``GET /remotes`` is checked afterwards);
- node alone: a fresh node without remotes, for what forwarding costs
  beside the node's own (durable) ingest.

Prints instances/s and MB/s (median of the rounds), the ratio node /
reference, and the forwarding latency per instance (arrival at the remote
minus receipt by the node: median and p95 over every instance).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.corpus import write_corpus
from tests.harness import RunningNode, StoreSCP, median, node_config, nodelay_env, percentile

# A node may take this long to start on a machine shared with other test runs.
START_TIMEOUT_S = 120.0


def warm(paths: list[Path]) -> None:
    """Read the corpus so the page cache, not the disk, feeds the sender."""
    for p in paths:
        p.read_bytes()


def storescu(aec: str, port: int, folder: Path) -> None:
    args = ["storescu", "-aet", "BENCH", "-aec", aec, "-nh", "+sd", "+r", "127.0.0.1", str(port), str(folder)]
    result = subprocess.run(args, capture_output=True, env=nodelay_env())
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr.decode()[-500:]}")


def count_files(folder: Path) -> int:
    with os.scandir(folder) as it:
        return sum(1 for e in it if e.is_file())


def reference_round(work: Path, corpus: Path, n: int) -> float:
    with StoreSCP(work / "direct") as scp:
        scp.start()
        t0 = time.perf_counter()
        storescu(scp.ae_title, scp.port, corpus)
        elapsed = time.perf_counter() - t0
        if count_files(scp.folder) != n:
            raise RuntimeError(f"storescp holds {count_files(scp.folder)} files, expected {n}")
    return elapsed


def ingest_round(work: Path, corpus: Path) -> float:
    """The node alone (no remote): seconds for storescu to store the corpus in it."""
    root = work / "alone"
    node = RunningNode(root, node_config(root)).start(START_TIMEOUT_S)
    try:
        t0 = time.perf_counter()
        storescu(node.ae_title, node.dicom_port, corpus)
        return time.perf_counter() - t0
    finally:
        node.stop()


def node_round(work: Path, corpus: Path, n: int, timeout: float = 600) -> tuple[float, float, list[float]]:
    """Seconds to the last file at the remote and to storescu's exit (all stored); latencies."""
    with StoreSCP(work / "forwarded") as scp:
        scp.start()
        root = work / "node"
        config = node_config(root, remotes=[scp.remote("pacs", forward=True)])
        node = RunningNode(root, config).start(START_TIMEOUT_S)
        try:
            t0 = time.perf_counter()
            storescu(node.ae_title, node.dicom_port, corpus)
            received = time.perf_counter() - t0
            while count_files(scp.folder) < n:
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"only {count_files(scp.folder)} of {n} files forwarded in {timeout}s")
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            deadline = time.monotonic() + 30
            while True:
                report = httpx.get(f"{node.url}/remotes", timeout=10).json()["remotes"][0]
                if report["forwarded"] == n or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if report["forwarded"] != n or report["failed"]:
                raise RuntimeError(f"remote report after the run: {report}")
            latencies = _latencies(node, scp.folder)
        finally:
            node.stop()
    return elapsed, received, latencies


def _latencies(node: RunningNode, remote_folder: Path) -> list[float]:
    """Per instance: mtime of its file at the remote minus the node's received_at (UTC)."""
    received = dict(node.index_rows("SELECT sop_uid, received_at FROM instance"))
    out = []
    for entry in os.scandir(remote_folder):
        uid = entry.name.split(".", 1)[1]  # storescp names files <modality>.<SOP Instance UID>
        if uid in received:
            when = received[uid]  # text from SQLite, a datetime from PostgreSQL
            when = dt.datetime.fromisoformat(when) if isinstance(when, str) else when
            at = when.replace(tzinfo=dt.UTC).timestamp()
            out.append(entry.stat().st_mtime - at)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", choices=("ct", "tiny"), default="ct")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    a = p.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="bench-forward-", dir=a.workdir))
    try:
        corpus = base / "corpus"
        paths = write_corpus(corpus, studies=1, series=1, instances=a.instances, size=a.size)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"corpus: {len(paths)} {a.size} instances, {mb:.0f} MB")
        ref_times, node_times, received_times, alone_times, latencies = [], [], [], [], []
        for r in range(a.rounds):
            work = base / f"round{r}"
            warm(paths)
            ref_times.append(reference_round(work, corpus, len(paths)))
            shutil.rmtree(work, ignore_errors=True)
            warm(paths)
            elapsed, received, lat = node_round(work, corpus, len(paths))
            shutil.rmtree(work, ignore_errors=True)
            warm(paths)
            alone_times.append(ingest_round(work, corpus))
            node_times.append(elapsed)
            received_times.append(received)
            latencies += lat
            shutil.rmtree(work, ignore_errors=True)
            print(
                f"round {r + 1}: storescu->storescp {len(paths) / ref_times[-1]:.1f} inst/s, "
                f"storescu->node->storescp {len(paths) / elapsed:.1f} inst/s "
                f"(all stored in the node after {received:.2f}s, at the remote after {elapsed:.2f}s); "
                f"node alone {len(paths) / alone_times[-1]:.1f} inst/s"
            )
        n = len(paths)
        ref, node = median(ref_times), median(node_times)
        rows = (
            ("storescu -> storescp (reference)", ref),
            ("storescu -> node -> storescp", node),
            ("  of which storescu -> node", median(received_times)),
            ("storescu -> node, no remote", median(alone_times)),
        )
        for label, t in rows:
            print(f"{label:34} {n / t:8.1f} inst/s {mb / t:8.1f} MB/s  (median {t:.2f}s)")
        print(f"forwarding cost: node->storescp / node alone {median(alone_times) / node:8.2f}")
        print(f"ratio node / reference            {ref / node:8.2f}  (target >= 0.7)")
        print(
            f"forwarding latency (remote arrival - node receipt): median {median(latencies) * 1000:.0f} ms, "
            f"p95 {percentile(latencies, 95) * 1000:.0f} ms over {len(latencies)} instances"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
