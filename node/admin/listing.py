"""``dicom-node ls [patients|studies|series]``: what the node holds, as a readable table.

Filters are C-FIND matching keys (wildcards, date ranges, UID lists: PS3.4
C.2.2.2) run through the one query engine (node/index/query.py), so ``ls``
finds exactly what findscu and QIDO-RS would.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag

from ..index.query import Query, QueryError, run


@dataclass(frozen=True)
class Column:
    title: str
    keyword: str
    width: int = 0  # 0: as wide as the values; else values are cut to this


@dataclass(frozen=True)
class Listing:
    level: str
    root: str
    columns: tuple[Column, ...]


_NAME = Column("Name", "PatientName", 24)
_ID = Column("Patient ID", "PatientID", 16)
LISTINGS = {
    "patients": Listing(
        "PATIENT",
        "PATIENT",
        (
            _NAME,
            _ID,
            Column("Birth date", "PatientBirthDate"),
            Column("Sex", "PatientSex"),
            Column("Studies", "NumberOfPatientRelatedStudies"),
            Column("Series", "NumberOfPatientRelatedSeries"),
            Column("Instances", "NumberOfPatientRelatedInstances"),
        ),
    ),
    "studies": Listing(
        "STUDY",
        "STUDY",
        (
            _NAME,
            _ID,
            Column("Date", "StudyDate"),
            Column("Accession", "AccessionNumber"),
            Column("Modalities", "ModalitiesInStudy"),
            Column("Description", "StudyDescription", 28),
            Column("Series", "NumberOfStudyRelatedSeries"),
            Column("Instances", "NumberOfStudyRelatedInstances"),
            Column("Study UID", "StudyInstanceUID"),
        ),
    ),
    "series": Listing(
        "SERIES",
        "STUDY",
        (
            _NAME,
            _ID,
            Column("Date", "StudyDate"),
            Column("Accession", "AccessionNumber"),
            Column("Modality", "Modality"),
            Column("No", "SeriesNumber"),
            Column("Description", "SeriesDescription", 28),
            Column("Instances", "NumberOfSeriesRelatedInstances"),
            Column("Series UID", "SeriesInstanceUID"),
        ),
    ),
}

# The command's own options, as the matching keys they set.
OPTION_KEYS = {
    "name": "PatientName",
    "patient_id": "PatientID",
    "date": "StudyDate",
    "accession": "AccessionNumber",
    "modality": "ModalitiesInStudy",
    "study": "StudyInstanceUID",
}


class ListingError(ValueError):
    """A filter cannot be used; the message says which and why."""


def parse_key(item: str) -> tuple[str, str]:
    """``-k`` as findscu takes it: ``Keyword=value`` or ``gggg,eeee=value`` (no value: return it)."""
    key, _, value = item.partition("=")
    key = key.strip()
    if "," in key:
        group, _, element = key.partition(",")
        try:
            keyword = keyword_for_tag(int(group, 16) << 16 | int(element, 16))
        except ValueError:
            keyword = ""
        if not keyword:
            raise ListingError(f"-k {item!r}: {key} is not a known tag")
        key = keyword
    if not key.isidentifier():
        raise ListingError(f"-k {item!r}: expected Keyword=value or gggg,eeee=value")
    return key, value


def build_query(what: str, options: dict[str, str | None], keys: Sequence[str], limit: int | None) -> Query:
    """The query of ``ls WHAT`` with these options and ``-k`` keys."""
    listing = LISTINGS[what]
    filters: dict[str, str] = {}
    for option, keyword in OPTION_KEYS.items():
        value = options.get(option)
        if value is not None:
            if what == "series" and keyword == "ModalitiesInStudy":
                keyword = "Modality"
            filters[keyword] = value
    for item in keys:
        keyword, value = parse_key(item)
        filters[keyword] = value
    returned = tuple(c.keyword for c in listing.columns if c.keyword not in filters)
    return Query(listing.level, filters, returned, root=listing.root, limit=limit)


def cell(keyword: str, value: object) -> str:
    """A value as the table shows it: lists comma-joined, dates as YYYY-MM-DD."""
    if isinstance(value, list):
        return ",".join(value)
    text = str(value)
    if keyword.endswith("Date") and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def table(columns: Sequence[Column], rows: Sequence[dict[str, object]]) -> list[str]:
    """Aligned text lines: a header, then one line per row (long values cut with "~")."""
    cells = []
    for row in rows:
        line = []
        for c in columns:
            text = cell(c.keyword, row.get(c.keyword, ""))
            if c.width and len(text) > c.width:
                text = text[: c.width - 1] + "~"
            line.append(text)
        cells.append(line)
    widths = [max([len(c.title), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    out = ["  ".join(c.title.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out += ["  ".join(t.ljust(w) for t, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return out


def _series_number(row: dict[str, object]) -> float:
    try:
        return float(str(row.get("SeriesNumber") or "").strip())
    except ValueError:
        return float("inf")


def _by_series_number(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Series in the order of their SeriesNumber within each study (studies in the order found).

    The index answers in arrival order, and series imported by several writers arrive in any order.
    """
    first: dict[object, int] = {}
    for row in rows:
        first.setdefault(row.get("StudyInstanceUID"), len(first))
    return sorted(rows, key=lambda r: (first[r.get("StudyInstanceUID")], _series_number(r)))


def run_ls(
    what: str,
    options: dict[str, str | None],
    keys: Sequence[str],
    *,
    limit: int,
    as_json: bool = False,
) -> int:
    """Print the matches (at most *limit*; 0 = all); exit status 2 for a filter that cannot be used."""
    try:
        query = build_query(what, options, keys, limit + 1 if limit else None)
        rows = list(run(query))
    except (ListingError, QueryError) as exc:
        print(f"dicom-node ls: {exc}", file=sys.stderr)
        return 2
    more = bool(limit) and len(rows) > limit
    rows = rows[:limit] if limit else rows
    if what == "series":
        rows = _by_series_number(rows)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    columns = LISTINGS[what].columns
    if rows:
        print("\n".join(table(columns, rows)))
    noun = what if len(rows) != 1 else {"patients": "patient", "studies": "study"}.get(what, what)
    tail = f" (more not shown: --limit {limit * 10} or --limit 0 for all)" if more else ""
    print(f"{len(rows)} {noun}{tail}", file=sys.stderr)
    return 0
