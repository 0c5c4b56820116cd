"""``dicom-node check [--repair]``: the index and the files agree, and nothing is left over.

Finds rows whose file is missing, files no row points to, size mismatches,
and debris: temp files (``.part`` spools, files kept aside during a
replacement) that no transfer in progress will use.  A temp file counts as
debris unless a node or an import holds the store (they may be writing it)
and it changed within the last hour.  ``--repair`` drops rows whose file is
gone, re-indexes stray and mismatched files through the ingest path (the
file is the truth) and removes the debris.  The exit status is 0 only when
nothing was found (or everything found was repaired).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .context import NodeContext
from .index.db import write_transaction
from .index.models import Instance, Patient, Series, Study
from .ingest import Source

# A temp file of a store in use that changed this recently may be a transfer in progress.
IN_PROGRESS_S = 3600.0


@dataclass
class Report:
    missing_files: list[str] = field(default_factory=list)  # row, no file
    stray_files: list[str] = field(default_factory=list)  # file, no row
    size_mismatches: list[str] = field(default_factory=list)
    debris: list[Path] = field(default_factory=list)  # temp files nothing will use
    in_progress: int = 0  # temp files that may belong to a transfer in progress

    @property
    def temp_files(self) -> int:
        return len(self.debris) + self.in_progress

    @property
    def clean(self) -> bool:
        return not (self.missing_files or self.stray_files or self.size_mismatches or self.debris)


def inspect(ctx: NodeContext) -> Report:
    """Compare every index row with the store's files; list the temp files left over."""
    report = Report()
    rows = {path: size for path, size in Instance.select(Instance.path, Instance.size).tuples()}
    on_disk = dict(ctx.store.iter_files())
    for path, size in rows.items():
        if path not in on_disk:
            report.missing_files.append(path)
        elif on_disk[path] != size:
            report.size_mismatches.append(path)
    report.stray_files = sorted(set(on_disk) - set(rows))
    in_use = ctx.store.in_use()
    for path, age in ctx.store.temp_files():
        if in_use and age < IN_PROGRESS_S:
            report.in_progress += 1
        else:
            report.debris.append(path)
    return report


def prune_empty_levels() -> None:
    """Delete series, studies and patients left without instances."""
    with write_transaction():
        Series.delete().where(~Series.id.in_(Instance.select(Instance.series))).execute()
        Study.delete().where(~Study.id.in_(Series.select(Series.study))).execute()
        Patient.delete().where(~Patient.id.in_(Study.select(Study.patient))).execute()


def repair_report(ctx: NodeContext, report: Report) -> list[str]:
    """Fix what *report* found; return the problems that could not be fixed."""
    problems = []
    if report.missing_files:
        with write_transaction():
            for chunk in range(0, len(report.missing_files), 500):
                paths = report.missing_files[chunk : chunk + 500]
                Instance.delete().where(Instance.path.in_(paths)).execute()
        prune_empty_levels()
    source = Source("import")
    for relative in report.stray_files + report.size_mismatches:
        outcome = ctx.ingest.ingest_file(ctx.store.absolute(relative), source, take=False)
        if not outcome.ok:
            problems.append(f"{relative}: {outcome.reason}")
            continue
        canonical = ctx.store.relative_path(outcome.study_uid, outcome.series_uid, outcome.sop_instance_uid)
        if canonical != relative:
            # Re-indexed under the path its UIDs give; the misplaced copy goes.
            ctx.store.remove(relative)
    for path in report.debris:
        path.unlink(missing_ok=True)
    return problems


def run_check(ctx: NodeContext, *, repair: bool = False) -> int:
    """Print what disagrees; with *repair*, fix it. Exit status 0 when consistent."""
    report = inspect(ctx)
    out = sys.stdout
    print(
        f"{len(report.missing_files)} rows without file, {len(report.stray_files)} files "
        f"without row, {len(report.size_mismatches)} size mismatches, "
        f"{report.temp_files} temp files ({len(report.debris)} left over, "
        f"{report.in_progress} maybe in progress)",
        file=out,
    )
    for label, items in (
        ("row without file", report.missing_files),
        ("file without row", report.stray_files),
        ("size mismatch", report.size_mismatches),
        ("left-over temp file", [str(p) for p in report.debris]),
    ):
        for item in items[:50]:
            print(f"  {label}: {item}", file=out)
    if report.clean:
        return 0
    if not repair:
        return 1
    problems = repair_report(ctx, report)
    for problem in problems:
        print(f"  could not repair {problem}", file=out)
    after = inspect(ctx)
    print("repaired" if after.clean else "still inconsistent after repair", file=out)
    return 0 if after.clean else 1
