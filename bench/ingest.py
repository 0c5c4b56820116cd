"""C-STORE ingest benchmark: the node beside DCMTK storescp and Orthanc, same corpus, same run.

    python -m bench.ingest [--ct 300] [--tiny 1000] [--rounds 3]

For each corpus (CT 512x512x16 bit, tiny 32x32) and each mode (one
association; 4 parallel associations) DCMTK ``storescu`` sends the corpus to:
the node, ``storescp`` (writing files, no index) and Orthanc (SQLite index).
Prints instances/s and MB/s (median of the rounds) and the ratios
node/storescp and node/Orthanc.  DCMTK and Orthanc run with TCP_NODELAY=1
(they leave Nagle's algorithm on otherwise); the node tunes its own sockets,
and one extra line shows it with a storescu that leaves Nagle on.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.corpus import write_corpus
from tests.harness import NODE_AE, Orthanc, RunningNode, StoreSCP, median, node_config, nodelay_env


def warm(paths: list[Path]) -> None:
    """Read the corpus so the page cache, not the disk, feeds the sender."""
    for p in paths:
        p.read_bytes()


def split(paths: list[Path], n: int) -> list[list[Path]]:
    return [paths[i::n] for i in range(n)]


def storescu(aec: str, port: int, groups: list[list[Path]], *, nodelay: bool = True) -> float:
    """Send each group over its own association, all at once; return the wall time."""
    procs = [
        ["storescu", "-aet", "BENCH", "-aec", aec, "-nh", "127.0.0.1", str(port), *map(str, group)]
        for group in groups
    ]
    env = nodelay_env() if nodelay else None
    t0 = time.perf_counter()
    running = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for c in procs]
    for p in running:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - t0


def run_target(start: Callable[[], tuple[object, str, int]], paths, groups, rounds, **kw) -> float:
    """Median wall time of *rounds* sends of *groups* to a fresh target each round."""
    times = []
    for _ in range(rounds):
        target, aec, port = start()
        try:
            warm(paths)
            times.append(storescu(aec, port, groups, **kw))
        finally:
            target.stop()
    return median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", type=int, default=300, help="CT instances in the corpus")
    ap.add_argument("--tiny", type=int, default=1000, help="tiny instances in the corpus")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--no-orthanc", action="store_true")
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        corpora = {
            "CT": write_corpus(tmp / "ct", studies=1, series=1, instances=a.ct, size="ct"),
            "tiny": write_corpus(tmp / "tiny", studies=1, series=1, instances=a.tiny, size="tiny"),
        }
        counter = iter(range(10_000))

        def node():
            root = tmp / f"node{next(counter)}"
            n = RunningNode(root, node_config(root)).start()
            return n, NODE_AE, n.dicom_port

        def storescp():
            s = StoreSCP(tmp / f"scp{next(counter)}").start()
            return s, s.ae_title, s.port

        def orthanc():
            o = Orthanc(tmp / f"orthanc{next(counter)}").start()
            return o, o.ae_title, o.dicom_port

        targets = {"node": node, "storescp": storescp}
        if not a.no_orthanc:
            targets["orthanc"] = orthanc
        print(f"{'corpus':6} {'assocs':>6} {'target':10} {'inst/s':>8} {'MB/s':>8}")
        for label, paths in corpora.items():
            mb = sum(p.stat().st_size for p in paths) / 1e6
            for assocs in (1, a.parallel):
                groups = split(paths, assocs)
                rates = {}
                for name, start in targets.items():
                    t = run_target(start, paths, groups, a.rounds)
                    rates[name] = len(paths) / t
                    print(f"{label:6} {assocs:>6} {name:10} {len(paths) / t:8.1f} {mb / t:8.1f}", flush=True)
                if assocs == 1:
                    t = run_target(node, paths, groups, a.rounds, nodelay=False)
                    print(
                        f"{label:6} {assocs:>6} {'node*':10} {len(paths) / t:8.1f} {mb / t:8.1f}"
                        "   (* storescu with Nagle on)",
                        flush=True,
                    )
                ratios = [f"node/storescp {rates['node'] / rates['storescp']:.2f}"]
                if "orthanc" in rates:
                    ratios.append(f"node/orthanc {rates['node'] / rates['orthanc']:.2f}")
                print(f"{label:6} {assocs:>6} ratios: {', '.join(ratios)}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
