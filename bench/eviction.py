"""What the bounded store costs: an eviction pass over a large index, and the access tracking of a read.

    python -m bench.eviction [--instances 200000] [--studies 4000] [--backend sqlite,postgresql] [--rounds 5]

The index is bench/big_index.py's synthetic archive (built once, kept in
``--cache``, default ``/tmp/bench-evict-<instances>``).  Per backend, in the
same run, median of ``--rounds``:

- the reference: ``store_totals()``, the one aggregate over every instance
  row that /health and /metrics already run (a full scan);
- a dry eviction pass with ``max_bytes = 1`` (the store "over its limit")
  when **nothing** may go (no instance has a copy elsewhere: the forward
  remote has been down): the worst case, a pass that judges every study and
  that runs again after ``max(1 s, 20 x its cost)`` (node/cache/eviction.py);
- the same pass when **everything** may go (every instance retrieved from an
  upstream), deciding over every study (dry: nothing is deleted);
- the access tracking of one WADO-RS read of a 50-instance study: the first
  read of the study in a minute (one UPDATE) and the next ones (a dictionary).

Figures taken on a shared machine are noisy; the ratio against the
reference in the same run is the figure to compare.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.big_index import PostgresBackend, SqliteBackend, big_index
from bench.query import study_uid
from node.cache.access import AccessTracker
from node.cache.eviction import Evictor
from node.config import parse
from node.context import open_context
from node.index.db import execute, write_transaction
from node.index.figures import store_totals
from tests.harness import median, node_config

UPSTREAM = {
    "name": "upstream",
    "ae_title": "UPSTREAM",
    "host": "127.0.0.1",
    "port": 1,
    "accession_prefixes": ["A"],
}
PACS = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 2, "forward": True}


def timed(call: Callable[[], object], rounds: int) -> tuple[float, object]:
    """Median seconds of *rounds* calls, and the last call's result."""
    times, result = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - t0)
    return median(times), result


def set_sources(source: str) -> None:
    with write_transaction():
        execute('UPDATE "instance" SET "source" = ?', [source])


def run_backend(backend, a: argparse.Namespace, cache: Path, tmp: Path) -> list[str]:
    target = big_index(backend, cache, a.instances, a.studies)
    config = node_config(
        tmp / backend.name, storage={"database": target, "max_bytes": 1}, remotes=[UPSTREAM, PACS]
    )
    ctx = open_context(parse(config, tmp))
    evictor = Evictor(ctx)
    lines = [f"{backend.name}: {a.instances:,} instances in {a.studies:,} studies"]
    try:
        reference, totals = timed(store_totals, a.rounds)
        lines.append(f"  reference store_totals() (full scan): {reference * 1e3:8.1f} ms")
        set_sources("import")
        kept_s, kept = timed(lambda: evictor.run_once(dry_run=True), a.rounds)
        lines.append(
            f"  pass, nothing evictable:   {kept_s * 1e3:8.1f} ms  ({kept_s / reference:.1f}x the reference;"
            f" {kept.kept:,} studies kept; next pass after {max(1.0, 20 * kept_s):.0f} s)"
        )
        set_sources("retrieve:upstream")
        all_s, every = timed(lambda: evictor.run_once(dry_run=True), a.rounds)
        lines.append(
            f"  pass, everything evictable: {all_s * 1e3:7.1f} ms  ({all_s / reference:.1f}x the reference;"
            f" {len(every.evicted):,} studies would go, {totals.bytes / 1e9:.2f} GB)"
        )
        tracker = AccessTracker()
        studies = [
            [f"{study_uid(k)}/{study_uid(k)}.1/{n}.dcm" for n in range(50)] for k in range(a.rounds * 4)
        ]
        first = [timed(lambda s=s: tracker(s), 1)[0] for s in studies]
        again = [timed(lambda s=s: tracker(s), 1)[0] for s in studies]
        lines.append(
            f"  tracking one read of 50 instances: first in a minute {median(first) * 1e6:.0f} us,"
            f" then {median(again) * 1e6:.1f} us"
        )
    finally:
        set_sources("import")
        ctx.db.close()
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=200_000)
    ap.add_argument("--studies", type=int, default=4_000)
    ap.add_argument("--backend", default="sqlite,postgresql")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache", type=Path)
    a = ap.parse_args(argv)
    cache = a.cache or Path(tempfile.gettempdir()) / f"bench-evict-{a.instances}"
    cache.mkdir(parents=True, exist_ok=True)
    makers = {"sqlite": SqliteBackend, "postgresql": PostgresBackend}
    tmp = Path(tempfile.mkdtemp(prefix="bench-evict-"))
    try:
        for name in a.backend.split(","):
            backend = makers[name.strip()](cache)
            try:
                for line in run_backend(backend, a, cache, tmp):
                    print(line)
            finally:
                backend.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
