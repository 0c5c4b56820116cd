"""Deleting a study over HTTP: the node's ``DELETE /dicom-web/studies/{study}`` beside Orthanc's.

    python -m bench.delete [--instances 1000] [--rounds 3] [--size tiny]

Each round, a fresh node and a fresh Orthanc receive the same one-study
corpus (storescu), then the study is deleted over HTTP and timed until the
answer (both answer once index rows and files are gone: the node after its
journal's file removals, Orthanc after its own).  Prints instances/s (median
of the rounds) and the ratio node / Orthanc.  No target: a figure to watch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
from pydicom import dcmread

from bench.corpus import write_corpus
from tests.harness import Orthanc, RunningNode, median, node_config, orthanc_available, storescu


def node_round(work: Path, corpus: Path, study: str) -> float:
    node = RunningNode(work / "node", node_config(work / "node")).start()
    try:
        storescu(node.ae_title, node.dicom_port, corpus)
        t0 = time.perf_counter()
        r = httpx.delete(f"{node.url}/dicom-web/studies/{study}", timeout=600)
        elapsed = time.perf_counter() - t0
        if r.status_code != 204 or any((node.storage / study).rglob("*.dcm")):
            raise RuntimeError(f"node: DELETE answered {r.status_code} or left files")
        return elapsed
    finally:
        node.stop()


def orthanc_round(work: Path, corpus: Path) -> float:
    with Orthanc(work / "orthanc").start() as orthanc:
        storescu(orthanc.ae_title, orthanc.dicom_port, corpus)
        (study_id,) = httpx.get(f"{orthanc.url}/studies", timeout=60).json()
        t0 = time.perf_counter()
        r = httpx.delete(f"{orthanc.url}/studies/{study_id}", timeout=600)
        elapsed = time.perf_counter() - t0
        if r.status_code != 200 or httpx.get(f"{orthanc.url}/studies").json():
            raise RuntimeError(f"Orthanc: DELETE answered {r.status_code} or kept the study")
        return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", choices=("tiny", "ct"), default="tiny")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-delete-") as tmp:
        work = Path(tmp)
        paths = write_corpus(
            work / "corpus", studies=1, series=2, instances=args.instances // 2, size=args.size
        )
        study = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
        node_s, orthanc_s = [], []
        for n in range(args.rounds):
            node_s.append(node_round(work / f"n{n}", work / "corpus", study))
            if orthanc_available():
                orthanc_s.append(orthanc_round(work / f"o{n}", work / "corpus"))
        count = len(paths)
        node_rate = count / median(node_s)
        print(f"node:    {node_rate:8.0f} instances/s deleted ({_seconds(node_s)})")
        if orthanc_s:
            orthanc_rate = count / median(orthanc_s)
            print(f"Orthanc: {orthanc_rate:8.0f} instances/s deleted ({_seconds(orthanc_s)})")
            print(f"node / Orthanc: {node_rate / orthanc_rate:.2f}")


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in values) + " s"


if __name__ == "__main__":
    main()
