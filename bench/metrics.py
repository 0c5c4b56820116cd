"""What the metrics cost on the ingest path, against the ingest of a tiny instance in the same run.

``python -m bench.metrics [--instances 2000]`` ingests tiny instances
through ``node.ingest.Ingest.ingest_file`` (fsync off, so the figure is the CPU
part, where any overhead would show) and times the per-instance metric
calls alone (one ingest outcome counted, one C-STORE duration observed),
then prints both medians and their ratio.  A scrape of /metrics is timed
too, over the index just filled.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from node import metrics
from node.config import parse
from node.context import open_context
from node.ingest import Source


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=2000)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = {
            "storage": {"path": "s", "database": "s/index.sqlite", "fsync": False},
            "export": {"path": "z"},
        }
        ctx = open_context(parse(config, root))
        study, series = generate_uid(), generate_uid()
        files = []
        for i in range(a.instances):
            ds = make_dataset(study_uid=study, series_uid=series, instance_number=i)
            files.append(write(ds, root / "in" / f"{i}.dcm"))
        source = Source("dimse", calling_aet="BENCH")
        ingest = []
        for path in files:
            started = time.perf_counter()
            assert ctx.ingest.ingest_file(path, source, take=True).ok
            ingest.append(time.perf_counter() - started)

        outcome = SimpleNamespace(ok=True, size=1234, failure_code=0)
        observe = metrics.REQUEST_DURATION.labels("c_store").observe
        calls = []
        for _ in range(a.instances):
            started = time.perf_counter()
            metrics.instance_received(outcome, source)
            observe(0.001)
            calls.append(time.perf_counter() - started)

        scrapes = []
        for _ in range(20):
            started = time.perf_counter()
            metrics.exposition(ctx)
            scrapes.append(time.perf_counter() - started)

    ingest_us, calls_us = _median_us(ingest), _median_us(calls)
    print(f"ingest_file, tiny instance, fsync off: median {ingest_us:.0f} us ({a.instances} instances)")
    print(f"metric calls per instance:            median {calls_us:.1f} us")
    print(f"ratio: {calls_us / ingest_us:.2%} of the ingest time")
    print(f"/metrics scrape over {a.instances} instances: median {_median_us(scrapes) / 1000:.1f} ms")


if __name__ == "__main__":
    main()
