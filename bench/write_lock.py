"""The SQLite write lock across processes: contention, and the flock against SQLite's busy handler.

    python -m bench.write_lock [--processes 2] [--instances 300] [--rounds 3]

*processes* processes (as the worker processes of one node) each store their
own tiny instances through the ingest path (``Ingest.ingest_file``, durable:
fsync of file, folder and index) into one store and one SQLite index, all at
once.  Two ways of queueing the writers of different processes, rounds
interleaved: ``flock`` (node/index/db.py: the kernel wakes the next writer)
and ``busy`` (SQLite's own busy handler only, which sleeps 1, 2, 5, 10 ...
ms between tries).  Prints the instances/s of all processes together, and
for ``flock`` the share of each process's wall time spent waiting for the
lock and holding it (contention).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

from bench.corpus import write_corpus
from tests.harness import median


def _store(root: Path, files: list[Path], mode: str, start, results) -> None:
    import fcntl

    from node.config import Settings, StorageSettings
    from node.context import open_context
    from node.index import db
    from node.ingest import Source

    waited = held = 0.0
    taken_at = [0.0]
    real = fcntl.flock

    def timed(fd: int, op: int) -> None:
        nonlocal waited, held
        t0 = time.perf_counter()
        real(fd, op)
        t1 = time.perf_counter()
        if op & fcntl.LOCK_UN:
            held += t0 - taken_at[0]
        else:
            waited += t1 - t0
            taken_at[0] = t1

    if mode == "busy":
        db._writer_file = lambda _db: None
    else:
        db.fcntl.flock = timed  # type: ignore[assignment]
    settings = Settings(storage=StorageSettings(path=root, database=root / "index.sqlite", min_free_bytes=0))
    ctx = open_context(settings)
    source = Source("import")
    start.wait()
    t0 = time.perf_counter()
    for path in files:
        outcome = ctx.ingest.ingest_file(path, source, take=False)
        assert outcome.ok, outcome.reason
    wall = time.perf_counter() - t0
    results.put((wall, waited, held))


def one_round(tmp: Path, corpora: list[list[Path]], mode: str, label: str) -> tuple[float, list[tuple]]:
    root = tmp / label
    # Migrations once, as the supervisor does, before the processes start.
    from node.config import Settings, StorageSettings
    from node.context import open_context

    open_context(Settings(storage=StorageSettings(path=root, database=root / "index.sqlite"))).db.close()
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_store, args=(root, files, mode, start, results)) for files in corpora]
    for p in procs:
        p.start()
    time.sleep(3.0)  # every process imported and opened the index
    t0 = time.perf_counter()
    start.set()
    figures = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    shutil.rmtree(root, ignore_errors=True)
    return sum(len(c) for c in corpora) / wall, figures


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--instances", type=int, default=300, help="per process")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-write-lock-"))
    try:
        rates: dict[str, list[float]] = {"flock": [], "busy": []}
        waits: list[float] = []
        holds: list[float] = []
        for r in range(a.rounds):
            for mode in rates:
                corpora = [
                    write_corpus(tmp / f"src-{r}-{mode}-{i}", studies=1, series=1, instances=a.instances)
                    for i in range(a.processes)
                ]
                for c in corpora:
                    for p in c:
                        p.read_bytes()
                rate, figures = one_round(tmp, corpora, mode, f"{mode}{r}")
                rates[mode].append(rate)
                if mode == "flock":
                    waits += [w / wall for wall, w, _ in figures]
                    holds += [h / wall for wall, _, h in figures]
        print(f"{a.processes} processes x {a.instances} tiny instances, medians of {a.rounds} rounds")
        for mode, values in rates.items():
            print(f"  {mode:6} {median(values):8.1f} inst/s")
        print(f"  ratio flock/busy {median(rates['flock']) / median(rates['busy']):.2f}")
        print(
            f"  flock: each process waited for the lock {median(waits) * 100:.0f}% and held it "
            f"{median(holds) * 100:.0f}% of its wall time (medians over processes and rounds)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
