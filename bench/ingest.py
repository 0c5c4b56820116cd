"""C-STORE ingest benchmark: the node (fast path on and off) beside DCMTK storescp and Orthanc, same run.

    python -m bench.ingest [--ct 300] [--tiny 1000] [--rounds 3] [--echo 40] [--no-orthanc]

For each corpus (CT 512x512x16 bit, tiny 32x32) and each mode (one
association; 4 parallel associations) DCMTK ``storescu`` sends the corpus to:
the node with its wire layer's fast path (``node``), the node on pynetdicom's
own code paths (``node-nofast``, ``[dicom].fast_path = false``), ``storescp``
(writing files, no index) and Orthanc (SQLite index).  Prints instances/s
and MB/s (median of the rounds) and the ratios against storescp and Orthanc.
Then the cost of an association: the median wall time of one ``echoscu``
call (connect, associate, C-ECHO, release) against each server.  DCMTK and
Orthanc run with TCP_NODELAY=1 (they leave Nagle's algorithm on otherwise);
the node tunes its own sockets, and one extra line shows it with a storescu
that leaves Nagle on.  Every node acknowledges a C-STORE only once the
instance is durable (fsync of file, folder and index), as in production.
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
from tests.harness import (
    NODE_AE,
    Orthanc,
    RunningNode,
    StoreSCP,
    median,
    node_config,
    nodelay_env,
    time_calls,
)


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


Start = Callable[[], tuple[object, str, int]]


def run_target(start: Start, paths, groups, rounds, **kw) -> float:
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


def echo_per_call(starts: dict[str, Start], calls: int) -> dict[str, float]:
    """Median ms of one echoscu call (a whole association) against each target, calls interleaved."""
    running = {name: start() for name, start in starts.items()}
    try:
        commands = {
            name: ["echoscu", "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port)]
            for name, (_, aec, port) in running.items()
        }
        time_calls(commands, 3, nodelay_env())  # warm-up
        return {name: median(t) for name, t in time_calls(commands, calls, nodelay_env()).items()}
    finally:
        for target, _, _ in running.values():
            target.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", type=int, default=300, help="CT instances in the corpus")
    ap.add_argument("--tiny", type=int, default=1000, help="tiny instances in the corpus")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--echo", type=int, default=40, help="echoscu calls per server (0: skip)")
    ap.add_argument("--no-orthanc", action="store_true")
    ap.add_argument("--no-nagle-line", action="store_true", help="skip the storescu-with-Nagle line")
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        corpora = {
            "CT": write_corpus(tmp / "ct", studies=1, series=1, instances=a.ct, size="ct"),
            "tiny": write_corpus(tmp / "tiny", studies=1, series=1, instances=a.tiny, size="tiny"),
        }
        counter = iter(range(10_000))

        def node(fast_path: bool) -> Start:
            def start():
                root = tmp / f"node{next(counter)}"
                n = RunningNode(root, node_config(root, dicom={"fast_path": fast_path})).start()
                return n, NODE_AE, n.dicom_port

            return start

        def storescp():
            s = StoreSCP(tmp / f"scp{next(counter)}").start()
            return s, s.ae_title, s.port

        def orthanc():
            o = Orthanc(tmp / f"orthanc{next(counter)}").start()
            return o, o.ae_title, o.dicom_port

        targets: dict[str, Start] = {"node": node(True), "node-nofast": node(False), "storescp": storescp}
        if not a.no_orthanc:
            targets["orthanc"] = orthanc
        print(f"{'corpus':6} {'assocs':>6} {'target':12} {'inst/s':>8} {'MB/s':>8}")
        for label, paths in corpora.items():
            mb = sum(p.stat().st_size for p in paths) / 1e6
            for assocs in (1, a.parallel):
                groups = split(paths, assocs)
                rates = {}
                for name, start in targets.items():
                    t = run_target(start, paths, groups, a.rounds)
                    rates[name] = len(paths) / t
                    print(f"{label:6} {assocs:>6} {name:12} {len(paths) / t:8.1f} {mb / t:8.1f}", flush=True)
                if assocs == 1 and not a.no_nagle_line:
                    t = run_target(targets["node"], paths, groups, a.rounds, nodelay=False)
                    print(
                        f"{label:6} {assocs:>6} {'node*':12} {len(paths) / t:8.1f} {mb / t:8.1f}"
                        "   (* storescu with Nagle on)",
                        flush=True,
                    )
                nodes = ("node", "node-nofast")
                ratios = [f"{n}/storescp {rates[n] / rates['storescp']:.2f}" for n in nodes]
                if "orthanc" in rates:
                    ratios += [f"{n}/orthanc {rates[n] / rates['orthanc']:.2f}" for n in nodes]
                print(f"{label:6} {assocs:>6} ratios: {', '.join(ratios)}", flush=True)
        if a.echo:
            per_call = echo_per_call(targets, a.echo)
            figures = ", ".join(f"{n} {v:.1f}" for n, v in per_call.items())
            print(f"echoscu per call (median of {a.echo}, ms): {figures}")
            if "orthanc" in per_call:
                base = per_call["orthanc"]
                ratios = ", ".join(f"{n} {per_call[n] / base:.2f}" for n in ("node", "node-nofast"))
                print(f"echoscu per call, ratio to orthanc (lower is faster): {ratios}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
