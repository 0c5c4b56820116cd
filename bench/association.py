"""The cost of an association, phase by phase: the node (fast path on and off) beside Orthanc.

    python -m bench.association [--rounds 40]

A raw-socket peer (tests/rawdimse.py: no DICOM toolkit on the client side,
so only the server is measured) connects, sends an A-ASSOCIATE-RQ, a
C-ECHO-RQ and an A-RELEASE-RQ and times each answer.  Two requests: one
context (Verification, what echoscu and findscu propose) and 120 storage
contexts with three transfer syntaxes each (what DCMTK storescu proposes).
Rounds alternate between the servers, so that load from elsewhere on the
machine falls on all of them alike.  Prints the median of each phase in ms.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from pynetdicom.presentation import StoragePresentationContexts

from tests.harness import NODE_AE, Orthanc, RunningNode, median, node_config
from tests.rawdimse import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    RELEASE_RQ,
    VERIFICATION,
    RawPeer,
    echo_rq,
    p_data,
)

PHASES = ("associate", "echo", "release")
BIG_ENDIAN = "1.2.840.10008.1.2.2"


def proposals() -> dict[str, tuple]:
    storage = tuple(
        (str(cx.abstract_syntax), (EXPLICIT_VR_LE, BIG_ENDIAN, IMPLICIT_VR_LE))
        for cx in StoragePresentationContexts[:119]
    )
    return {
        "1 context": ((VERIFICATION, (IMPLICIT_VR_LE,)),),
        "120 contexts": ((VERIFICATION, (IMPLICIT_VR_LE,)), *storage),
    }


def one_association(port: int, called: str, contexts: tuple) -> dict[str, float]:
    times = {}
    with RawPeer(port) as peer:
        started = time.perf_counter()
        reply = peer.associate(called, contexts=contexts)
        if reply.kind != 0x02:
            raise RuntimeError(f"{called} answered the A-ASSOCIATE-RQ with PDU type {reply.kind}")
        times["associate"] = time.perf_counter() - started
        started = time.perf_counter()
        peer.send(p_data(1, 0x03, echo_rq()))
        if peer.read().status != 0x0000:
            raise RuntimeError(f"{called}: C-ECHO failed")
        times["echo"] = time.perf_counter() - started
        started = time.perf_counter()
        peer.send(RELEASE_RQ)
        peer.read()
        times["release"] = time.perf_counter() - started
    return {k: v * 1000 for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--no-orthanc", action="store_true")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-association-"))
    servers: dict[str, tuple[object, str, int]] = {}
    try:
        for name, fast in (("node", True), ("node-nofast", False)):
            node = RunningNode(tmp / name, node_config(tmp / name, dicom={"fast_path": fast})).start()
            servers[name] = (node, NODE_AE, node.dicom_port)
        if not a.no_orthanc:
            orthanc = Orthanc(tmp / "orthanc").start()
            servers["orthanc"] = (orthanc, orthanc.ae_title, orthanc.dicom_port)
        heads = "".join(f" {p:>10}" for p in PHASES)
        print(f"{'request':13} {'server':12}{heads} {'total':>10}  (ms)")
        for label, contexts in proposals().items():
            figures: dict[str, dict[str, list[float]]] = {n: {p: [] for p in PHASES} for n in servers}
            for _, called, port in servers.values():
                one_association(port, called, contexts)  # warm-up
            for _ in range(a.rounds):
                for name, (_, called, port) in servers.items():
                    for phase, ms in one_association(port, called, contexts).items():
                        figures[name][phase].append(ms)
            for name, phases in figures.items():
                medians = [median(phases[p]) for p in PHASES]
                cells = "".join(f" {m:10.2f}" for m in medians)
                print(f"{label:13} {name:12}{cells} {sum(medians):10.2f}", flush=True)
    finally:
        for target, _, _ in servers.values():
            target.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
