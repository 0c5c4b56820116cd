"""``dicom-node check [--repair]``: the index and the files agree.

Finds rows whose file is missing, files no row points to, and size
mismatches.  ``--repair`` re-indexes stray and mismatched files through the
ingest path (the file is the truth) and drops rows whose file is gone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .context import NodeContext
from .index.db import write_transaction
from .index.models import Instance, Patient, Series, Study
from .ingest import Source, ingest_file


@dataclass
class Report:
    missing_files: list[str] = field(default_factory=list)  # row, no file
    stray_files: list[str] = field(default_factory=list)  # file, no row
    size_mismatches: list[str] = field(default_factory=list)
    temp_files: int = 0

    @property
    def clean(self) -> bool:
        return not (self.missing_files or self.stray_files or self.size_mismatches)


def inspect(ctx: NodeContext) -> Report:
    """Compare every index row with the store's files."""
    report = Report()
    rows = {path: size for path, size in Instance.select(Instance.path, Instance.size).tuples()}
    on_disk = dict(ctx.store.iter_files())
    for path, size in rows.items():
        if path not in on_disk:
            report.missing_files.append(path)
        elif on_disk[path] != size:
            report.size_mismatches.append(path)
    report.stray_files = sorted(set(on_disk) - set(rows))
    report.temp_files = sum(1 for _ in ctx.store.tmp.iterdir())
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
        outcome = ingest_file(ctx.store, ctx.store.absolute(relative), source, take=False)
        if not outcome.ok:
            problems.append(f"{relative}: {outcome.reason}")
            continue
        canonical = ctx.store.relative_path(outcome.study_uid, outcome.series_uid, outcome.sop_instance_uid)
        if canonical != relative:
            # Re-indexed under the path its UIDs give; the misplaced copy goes.
            ctx.store.remove(relative)
    ctx.store.discard_temp(max_age_s=3600)
    return problems


def run_check(ctx: NodeContext, *, repair: bool = False) -> int:
    """Print what disagrees; with *repair*, fix it. Exit status 0 when consistent."""
    report = inspect(ctx)
    out = sys.stdout
    print(
        f"{len(report.missing_files)} rows without file, {len(report.stray_files)} files "
        f"without row, {len(report.size_mismatches)} size mismatches, "
        f"{report.temp_files} temp files",
        file=out,
    )
    for label, items in (
        ("row without file", report.missing_files),
        ("file without row", report.stray_files),
        ("size mismatch", report.size_mismatches),
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
