"""C-STORE ingest benchmark: the node (fast path on and off) beside DCMTK storescp and Orthanc, same run.

    python -m bench.ingest [--ct 300] [--tiny 1000] [--rounds 3] [--baseline DIR] [--postgres] [--echo 40]
                           [--no-orthanc] [--workers 1,2,4] [--two-nodes]

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

Rounds go round the targets in turn (node, storescp, Orthanc, node, ...), so
that load from elsewhere on the machine hits all of them alike.
``--baseline DIR`` adds another revision of the node as a target (a source
tree, e.g. ``git archive main | tar -x -C DIR``), to measure a change before
and after in the same run.
``--postgres`` adds the node on a PostgreSQL index (``node-pg``: a private
server started for the run, fsync on, a fresh database each round, as
durable as the SQLite index's synchronous=FULL) and the ratio node-pg/node.
``--workers 1,2,4`` runs the node with each of those ``[server].workers``
(``node-w1``, ``node-w2``, ...) in place of ``node`` and ``node-nofast``,
and the ratios of each to Orthanc and to ``node-w1``.  ``--two-nodes`` (with
``--postgres``) adds two nodes on one PostgreSQL database and one storage
folder (``pair-pg``, the associations shared between their ports) beside
one node on PostgreSQL, and the ratio pair-pg/node-pg.
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
    PostgresServer,
    RunningNode,
    StoreSCP,
    median,
    node_config,
    nodelay_env,
    time_calls,
    twin_config,
)

# A node may take this long to start on a machine shared with other test runs.
START_TIMEOUT_S = 120.0


def warm(paths: list[Path]) -> None:
    """Read the corpus so the page cache, not the disk, feeds the sender."""
    for p in paths:
        p.read_bytes()


def split(paths: list[Path], n: int) -> list[list[Path]]:
    return [paths[i::n] for i in range(n)]


def storescu(
    aec: str, port: int | tuple[int, ...], groups: list[list[Path]], *, nodelay: bool = True
) -> float:
    """Send each group over its own association, all at once; return the wall time.

    With several *port*s (nodes sharing one archive) the groups go to them in turn.
    """
    ports = port if isinstance(port, tuple) else (port,)
    procs = [
        [
            "storescu",
            "-aet",
            "BENCH",
            "-aec",
            aec,
            "-nh",
            "127.0.0.1",
            str(ports[i % len(ports)]),
            *map(str, group),
        ]
        for i, group in enumerate(groups)
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


class Pair:
    """Two nodes on one index and one storage folder, stopped together."""

    def __init__(self, a: RunningNode, b: RunningNode) -> None:
        self.a, self.b = a, b

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()


def run_targets(starts: dict[str, Start], paths, groups, rounds, **kw) -> dict[str, float]:
    """Median wall time per target of *rounds* sends of *groups*, a fresh target each round.

    Rounds are interleaved (every target once, then again), so that load from
    elsewhere on the machine does not fall on one target only.
    """
    times: dict[str, list[float]] = {name: [] for name in starts}
    for _ in range(rounds):
        for name, start in starts.items():
            target, aec, port = start()
            try:
                warm(paths)
                times[name].append(storescu(aec, port, groups, **kw))
            finally:
                target.stop()
    return {name: median(t) for name, t in times.items()}


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
    ap.add_argument("--baseline", type=Path, help="source tree of another revision of the node to compare")
    ap.add_argument("--no-nagle-line", action="store_true", help="skip the run with Nagle left on")
    ap.add_argument("--postgres", action="store_true", help="also the node on a PostgreSQL index")
    ap.add_argument("--workers", help="comma-separated [server].workers to run the node with, e.g. 1,2,4")
    ap.add_argument("--two-nodes", action="store_true", help="with --postgres: two nodes on one database")
    ap.add_argument(
        "--only", help="comma-separated targets to run (node, node-nofast, node-pg, storescp, orthanc)"
    )
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    pg = PostgresServer(durable=True).start() if a.postgres else None  # its own temp folder
    try:
        sizes = {"CT": ("ct", a.ct), "tiny": ("tiny", a.tiny)}
        corpora = {
            label: write_corpus(tmp / size, studies=1, series=1, instances=count, size=size)
            for label, (size, count) in sizes.items()
            if count  # --ct 0 or --tiny 0 leaves that corpus out
        }
        counter = iter(range(10_000))

        def node(fast_path: bool = True, workers: int = 1) -> Start:
            def start():
                root = tmp / f"node{next(counter)}"
                config = node_config(root, dicom={"fast_path": fast_path}, server={"workers": workers})
                n = RunningNode(root, config).start(START_TIMEOUT_S)  # every worker serving
                return n, NODE_AE, n.dicom_port

            return start

        def pair_pg():
            assert pg is not None
            root = tmp / f"pair{next(counter)}"
            config = node_config(root, storage={"database": pg.create_database()})
            pair = Pair(
                RunningNode(root, config).start(),
                RunningNode(tmp / f"pair{next(counter)}", twin_config(config)).start(),
            )
            return pair, NODE_AE, (pair.a.dicom_port, pair.b.dicom_port)

        def baseline():
            root = tmp / f"base{next(counter)}"
            config = node_config(root)
            config["storage"].pop("min_free_bytes", None)  # a key older revisions do not know
            n = RunningNode(root, config, repo=a.baseline.resolve()).start(START_TIMEOUT_S)
            return n, NODE_AE, n.dicom_port

        def node_pg():
            assert pg is not None
            root = tmp / f"node{next(counter)}"
            config = node_config(root, storage={"database": pg.create_database()})
            n = RunningNode(root, config).start(START_TIMEOUT_S)
            return n, NODE_AE, n.dicom_port

        def storescp():
            s = StoreSCP(tmp / f"scp{next(counter)}").start()
            return s, s.ae_title, s.port

        def orthanc():
            o = Orthanc(tmp / f"orthanc{next(counter)}").start()
            return o, o.ae_title, o.dicom_port

        targets: dict[str, Start] = {"node": node(), "node-nofast": node(False), "storescp": storescp}
        counts = [int(w) for w in a.workers.split(",")] if a.workers else []
        if counts:
            targets = {f"node-w{w}": node(workers=w) for w in counts}
        if a.baseline:
            targets["baseline"] = baseline
        if pg is not None:
            targets["node-pg"] = node_pg
            if a.two_nodes:
                targets["pair-pg"] = pair_pg
        if not a.no_orthanc:
            targets["orthanc"] = orthanc
        if a.only:
            targets = {k: v for k, v in targets.items() if k in a.only.split(",")}
        print(f"{'corpus':6} {'assocs':>6} {'target':10} {'inst/s':>8} {'MB/s':>8}")
        for label, paths in corpora.items():
            mb = sum(p.stat().st_size for p in paths) / 1e6
            for assocs in (1, a.parallel):
                groups = split(paths, assocs)
                rates = {}
                for name, t in run_targets(targets, paths, groups, a.rounds).items():
                    rates[name] = len(paths) / t
                    print(f"{label:6} {assocs:>6} {name:10} {len(paths) / t:8.1f} {mb / t:8.1f}", flush=True)
                if assocs == 1 and "node" in targets and not a.only and not a.no_nagle_line and not counts:
                    t = run_targets({"node*": node()}, paths, groups, a.rounds, nodelay=False)["node*"]
                    print(
                        f"{label:6} {assocs:>6} {'node*':10} {len(paths) / t:8.1f} {mb / t:8.1f}"
                        "   (* storescu with Nagle on)",
                        flush=True,
                    )
                ratios = []
                pairs = (
                    ("node", "storescp"),
                    ("node", "orthanc"),
                    ("node-nofast", "orthanc"),
                    ("node", "baseline"),
                    ("baseline", "orthanc"),
                    ("node-pg", "node"),
                    ("pair-pg", "node-pg"),
                    *((f"node-w{w}", "orthanc") for w in counts),
                    *((f"node-w{w}", f"node-w{counts[0]}") for w in counts[1:]),
                )
                for a_, b_ in pairs:
                    if a_ in rates and b_ in rates:
                        ratios.append(f"{a_}/{b_} {rates[a_] / rates[b_]:.2f}")
                print(f"{label:6} {assocs:>6} ratios: {', '.join(ratios)}", flush=True)
        if a.echo:
            per_call = echo_per_call(targets, a.echo)
            figures = ", ".join(f"{n} {v:.1f}" for n, v in per_call.items())
            print(f"echoscu per call (median of {a.echo}, ms): {figures}")
            if "orthanc" in per_call:
                base = per_call["orthanc"]
                ratios = ", ".join(f"{n} {v / base:.2f}" for n, v in per_call.items() if n.startswith("node"))
                print(f"echoscu per call, ratio to orthanc (lower is faster): {ratios}")
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
