"""``dicom-node delete UID...``: show what the UIDs name, ask, then delete (node/deletion.py).

Each UID may be a study, a series or an instance.  Unknown UIDs are
reported and the rest deleted, as ``rm`` does (exit status 1 then).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from .. import deletion
from ..context import NodeContext
from ..index.deletion import Target, classify
from ..index.query import Query, run
from .listing import cell

log = logging.getLogger(__name__)

# What the confirmation shows of each level, through the one query engine.
_DESCRIBE = {
    "study": ("STUDY", "StudyInstanceUID", "NumberOfStudyRelatedInstances"),
    "series": ("SERIES", "SeriesInstanceUID", "NumberOfSeriesRelatedInstances"),
    "instance": ("IMAGE", "SOPInstanceUID", ""),
}
_CONTEXT_KEYS = ("PatientName", "PatientID", "StudyDate", "AccessionNumber")


def describe(target: Target) -> tuple[str, int]:
    """A line saying what *target* is, and how many instances it holds."""
    level, key, count_key = _DESCRIBE[target.level]
    extra = ("Modality",) if target.level != "study" else ("ModalitiesInStudy",)
    returned = _CONTEXT_KEYS + extra + ((count_key,) if count_key else ())
    match = next(run(Query(level, {key: target.uid}, returned)), None)
    if match is None:
        return f"{target}: (gone)", 0
    count = int(match[count_key]) if count_key else 1
    modality = match.get("ModalitiesInStudy") or match.get("Modality") or ""
    if isinstance(modality, list):
        modality = ",".join(modality)
    facts = [
        f"{match['PatientName'] or '(no name)'} ({match['PatientID']})",
        cell("StudyDate", match["StudyDate"]),
        f"accession {match['AccessionNumber']}" if match["AccessionNumber"] else "",
        modality,
        f"{count} instance{'s' if count != 1 else ''}",
    ]
    return f"{target}: " + ", ".join(f for f in facts if f), count


def run_delete(
    ctx: NodeContext,
    uids: Sequence[str],
    *,
    yes: bool = False,
    ask: Callable[[str], str] = input,
) -> int:
    """The command; *ask* reads the confirmation (``input`` unless --yes)."""
    targets: list[Target] = []
    unknown: list[str] = []
    for uid in dict.fromkeys(u.strip() for u in uids):
        target = classify(uid)
        if target is None:
            unknown.append(uid)
        else:
            targets.append(target)
    for uid in unknown:
        print(f"dicom-node delete: {uid}: no study, series or instance with this UID", file=sys.stderr)
    if not targets:
        return 1
    total = 0
    for target in targets:
        line, count = describe(target)
        total += count
        print(line)
    if not yes:
        try:
            answer = ask(f"Delete {'these' if len(targets) > 1 else 'this'} ({total} instances)? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    deleted = deletion.delete(ctx, targets)
    if deleted.instances:
        log.info("deleted %s", deletion.summary(deleted))
    else:
        print("nothing deleted (already gone)")
    return 1 if unknown else 0
