"""``dicom-node import``: files and folders, recursively, through the ingest path."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .context import NodeContext
from .ingest import Outcome, Source, Status

# fsync dominates a store; a few writers in flight keep the disk busy.
WORKERS = 4
SHOWN_FAILURES = 20


def iter_files(paths: Iterable[str]) -> Iterator[Path]:
    """Every regular file named by *paths*, folders walked recursively in sorted order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    yield Path(dirpath) / name
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")


def run_import(ctx: NodeContext, paths: list[str], *, progress: bool = True) -> int:
    """Import *paths*; print a summary; exit status 1 when any file failed."""
    console = Console(stderr=True)
    files = list(iter_files(paths))
    counts: Counter[str] = Counter()
    failures: list[tuple[Path, Outcome]] = []
    source = Source("import")

    def one(path: Path) -> tuple[Path, Outcome]:
        return path, ctx.ingest.ingest_file(path, source, take=False)

    bar = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    with bar, ThreadPoolExecutor(WORKERS) as pool:
        task = bar.add_task("import", total=len(files))
        for path, outcome in pool.map(one, files):
            counts[outcome.status.value] += 1
            if outcome.status is Status.FAILED:
                failures.append((path, outcome))
            bar.advance(task)
    ctx.db.close()

    console.print(
        f"{counts[Status.STORED.value]} stored, {counts[Status.REPLACED.value]} replaced, "
        f"{counts[Status.FAILED.value]} failed (of {len(files)} files)"
    )
    for path, outcome in failures[:SHOWN_FAILURES]:
        console.print(f"  failed {path}: {outcome.reason}", markup=False, highlight=False, soft_wrap=True)
    if len(failures) > SHOWN_FAILURES:
        console.print(f"  ... and {len(failures) - SHOWN_FAILURES} more failures")
    return 1 if failures else 0
