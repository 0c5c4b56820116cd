"""Forwarding delay across processes: how soon an instance stored by one process is forwarded by another.

    python -m bench.wakeup [--instances 20]

One instance at a time is C-STOREd (pynetdicom, a new association each, so
that with workers any of them may take it) into a node whose every instance
is forwarded to DCMTK ``storescp``; the delay is from the C-STORE response
to the file at storescp.  Targets: one process (``workers-1``: the forward
job in the same process, woken in memory), two workers (``workers-2``: the
job held by either; the doorbell wakes it when the other stored), two nodes
on one index and one storage folder (``two-nodes``: no doorbell between
nodes, the holder finds the rows at its next poll, ``[jobs].poll_seconds``
= 2 s).  Prints the median and p90 in ms, and which process stored each
instance is not controlled: with two workers about half land on the holder.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

from bench.corpus import write_corpus
from tests.harness import (
    RunningNode,
    StoreSCP,
    c_store,
    median,
    node_config,
    percentile,
    twin_config,
)


def delays(ports: list[int], ae: str, paths: list[Path], scp: StoreSCP) -> list[float]:
    """Store each file through the ports in turn; the seconds until storescp has it."""
    out = []
    for i, path in enumerate(paths):
        before = len(scp.files())
        status = c_store(ae, ports[i % len(ports)], dcmread(path))
        assert status.Status == 0, status
        t0 = time.perf_counter()
        while len(scp.files()) <= before:
            if time.perf_counter() - t0 > 30:
                raise TimeoutError(f"{path} not forwarded in 30 s")
            time.sleep(0.002)
        out.append(time.perf_counter() - t0)
        time.sleep(0.3)  # let the forwarder go idle again: each instance finds it waiting
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=20)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-wakeup-"))
    try:
        print(f"{'target':10} {'median ms':>10} {'p90 ms':>8}")
        for label in ("workers-1", "workers-2", "two-nodes"):
            scp = StoreSCP(tmp / f"scp-{label}").start()
            root = tmp / label
            workers = 2 if label == "workers-2" else 1
            config = node_config(root, server={"workers": workers}, remotes=[scp.remote("scp", forward=True)])
            nodes = [RunningNode(root, config).start(timeout=120)]
            if label == "two-nodes":
                nodes.append(RunningNode(tmp / f"{label}-b", twin_config(config)).start(timeout=120))
            try:
                paths = write_corpus(tmp / f"src-{label}", studies=1, series=1, instances=a.instances)
                got = delays([n.dicom_port for n in nodes], nodes[0].ae_title, paths, scp)
                print(f"{label:10} {median(got) * 1000:10.1f} {percentile(got, 90) * 1000:8.1f}", flush=True)
            finally:
                for n in nodes:
                    n.stop()
                scp.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
