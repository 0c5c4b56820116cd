"""QIDO-RS (PS3.18 10.6) as a query of the one query engine, and its matches as DICOM JSON.

This module only translates: query parameters -> :class:`node.index.query.Query`,
matches -> PS3.18 Annex F objects.  All matching is the engine's.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from ..cache.query import AVAILABILITY, Merge, ReadThrough, Shortfall
from ..index import catalog
from ..index import query as engine

# Resource -> engine level, and the UID of each level a path may fix.
LEVELS = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
UID_KEYS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}

# PS3.18 Table 6.7.1-2 (study), -2a (series), -2b (instance): the attributes
# returned without includefield (those the index holds, as the catalogue
# marks them; RetrieveURL and InstanceAvailability are added by to_json).
STUDY_DEFAULTS = catalog.qido_defaults("STUDY")
SERIES_DEFAULTS = catalog.qido_defaults("SERIES")
INSTANCE_DEFAULTS = catalog.qido_defaults("IMAGE")

# Query parameters that are not attributes (PS3.18 8.3.4).
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
# VRs whose values cannot contain a comma: a comma in a QIDO value lists values there.
_COMMA_LISTS = {"UI", "CS", "DA", "TM", "DT"}
_TEXT_MULTI = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"}


class SearchError(ValueError):
    """A query parameter cannot be answered; the message names it."""


@dataclass(frozen=True)
class Search:
    """A parsed QIDO-RS request."""

    query: engine.Query
    level: str
    limit: int | None  # as asked (the engine is asked for one more, to tell truncation)


def attribute_keyword(name: str) -> str:
    """A QIDO attribute ID (keyword or 8-hex-digit tag) as a keyword; raises SearchError."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
        raise SearchError(f"unknown attribute tag {name}")
    if "." in name:
        raise SearchError(f"attribute {name!r}: sequence paths are not supported for matching")
    if tag_for_keyword(name) is None:
        raise SearchError(f"unknown attribute {name!r} (use a DICOM keyword or an 8-digit tag)")
    return name


@functools.cache
def _vr(keyword: str) -> str:
    """The dictionary VR of *keyword* (cached: pydicom's lookup is slow per call)."""
    try:
        return dictionary_VR(keyword)
    except KeyError:
        return "UN"


@functools.cache
def _json_key(keyword: str) -> str | None:
    """The 8-hex-digit JSON key of *keyword* (cached)."""
    tag = tag_for_keyword(keyword)
    return None if tag is None else f"{tag:08X}"


def _non_negative(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SearchError(f"{name}={value!r}: expected a non-negative integer") from None
    if number < 0:
        raise SearchError(f"{name}={value!r}: expected a non-negative integer")
    return number


def defaults(level: str, fixed: Iterable[str]) -> tuple[str, ...]:
    """Default return keys at *level*; upper levels' defaults too unless the path fixes their UID."""
    fixed = set(fixed)
    keys: list[str] = []
    if level == "STUDY" or "StudyInstanceUID" not in fixed:
        keys += STUDY_DEFAULTS
    else:
        keys.append("StudyInstanceUID")
    if level in ("SERIES", "IMAGE"):
        if level == "SERIES" or "SeriesInstanceUID" not in fixed:
            keys += SERIES_DEFAULTS
        else:
            keys.append("SeriesInstanceUID")
    if level == "IMAGE":
        keys += INSTANCE_DEFAULTS
    return tuple(dict.fromkeys(keys))


def parse(resource: str, params: Iterable[tuple[str, str]], path_uids: dict[str, str]) -> Search:
    """Build the engine query for ``GET /dicom-web/{...}/{resource}?params``; raises SearchError."""
    level = LEVELS[resource]
    filters: dict[str, str] = {UID_KEYS[k]: v for k, v in path_uids.items()}
    fixed_by_path = set(filters)
    included: list[str] = []
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in params:
        if name == "limit":
            limit = _non_negative(name, value)
        elif name == "offset":
            offset = _non_negative(name, value)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise SearchError(f"fuzzymatching={value!r}: expected true or false")
            fuzzy = value.lower() == "true"
        elif name == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item == "all":
                    include_all = True
                elif item:
                    included.append(attribute_keyword(item))
        else:
            keyword = attribute_keyword(name)
            if keyword in filters and filters[keyword] != value and keyword in fixed_by_path:
                raise SearchError(f"{keyword}={value!r} contradicts the UID in the path")
            if _vr(keyword) in _COMMA_LISTS:
                value = value.replace(",", "\\")
            filters[keyword] = value
    supported = engine.supported_keys(level)
    if include_all:
        included += sorted(supported)
    # Attributes the index does not hold cannot be returned; asking for them is not an error.
    return_keys = tuple(k for k in dict.fromkeys([*defaults(level, filters), *included]) if k in supported)
    query = engine.Query(
        level,
        filters,
        return_keys,
        root="STUDY",
        fuzzy=fuzzy,
        limit=None if limit is None else limit + 1,
        offset=offset,
    )
    return Search(query, level, limit)


PAGE = 500  # matches read from the database per step when no limit bounds the answer


@dataclass
class Answer:
    """The matches of a search, whether the limit left some out, and the remotes that did not answer."""

    matches: Iterator[dict[str, object]]
    truncated: bool
    shortfalls: list[Shortfall] = dataclasses.field(default_factory=list)


def run(search: Search) -> tuple[Iterator[dict[str, object]], bool]:
    """The local matches of *search* and whether the limit left some out (see :func:`answer`)."""
    found = answer(search)
    return found.matches, found.truncated


def answer(search: Search, read_through: ReadThrough | None = None) -> Answer:
    """The matches (local, then those only the read-through remotes hold) and whether the limit left some out.

    With a limit, at most limit + 1 rows are read, to tell whether more
    exist.  Without one, matches are read a page at a time, each page whole
    within one call: a database cursor must stay on the thread that opened
    it, and a streaming response may resume on another worker thread.
    SearchError is raised here, before any match is produced; the remotes
    are waited for here too (at most ``[cache].query_timeout``), so that the
    shortfalls are known before the response starts.
    """
    merge = None if read_through is None else Merge(search.query, read_through)
    first = _page(search.query, search.query.offset, PAGE if search.limit is None else search.query.limit)
    if search.limit is not None:
        page = first if merge is None else list(merge.matches(first))
        shortfalls = [] if merge is None else merge.shortfalls
        return Answer(iter(page[: search.limit]), len(page) > search.limit, shortfalls)
    local = itertools.chain(first, _rest(search.query, len(first)))
    if merge is None:
        return Answer(local, False)
    if len(first) < PAGE:  # every local match is in hand: settle the remotes' part now
        page = list(merge.matches(first))
        return Answer(iter(page), False, merge.shortfalls)
    merge.settle(len(first))
    return Answer(merge.matches(local), False, merge.shortfalls)


def _page(query: engine.Query, offset: int, limit: int | None) -> list[dict[str, object]]:
    try:
        return list(engine.run(dataclasses.replace(query, offset=offset, limit=limit)))
    except engine.QueryError as exc:
        raise SearchError(str(exc)) from None


def _rest(query: engine.Query, got: int) -> Iterator[dict[str, object]]:
    """The pages after the first (ids only grow, so paging by offset is stable for reading)."""
    offset = query.offset + got
    while got == PAGE:
        page = _page(query, offset, PAGE)
        yield from page
        got = len(page)
        offset += got


def encode(
    matches: Iterator[dict[str, object]], level: str, base_url: str, batch: int = 256
) -> Iterator[bytes]:
    """The JSON array of *matches*, produced *batch* objects at a time."""
    yield b"["
    first = True
    while chunk := list(itertools.islice(matches, batch)):
        text = ",".join(json.dumps(to_json(m, level, base_url), ensure_ascii=False) for m in chunk)
        yield (text if first else "," + text).encode()
        first = False
    yield b"]"


def _element(keyword: str, value: object) -> dict[str, Any]:
    vr = _vr(keyword)
    if value in ("", None, []):
        return {"vr": vr}
    if isinstance(value, list):
        return {"vr": vr, "Value": value}
    if isinstance(value, int) and not isinstance(value, bool):
        return {"vr": vr, "Value": [value]}
    text = str(value)
    if vr == "PN":
        names = []
        for name in text.split("\\"):
            groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), name.split("="), strict=False))
            names.append({k: v for k, v in groups.items() if v})
        return {"vr": vr, "Value": names}
    if vr in ("IS", "US", "UL", "SS", "SL"):
        try:
            return {"vr": vr, "Value": [int(v) for v in text.split("\\")]}
        except ValueError:
            return {"vr": vr}
    if vr in _TEXT_MULTI:
        return {"vr": vr, "Value": text.split("\\")}
    return {"vr": vr, "Value": [text]}


def to_json(match: dict[str, object], level: str, base_url: str) -> dict[str, Any]:
    """One match as a DICOM JSON object, with RetrieveURL and InstanceAvailability."""
    out: dict[str, Any] = {}
    for keyword, value in match.items():
        key = _json_key(keyword)
        if key is not None:
            out[key] = _element(keyword, value)
    url = f"{base_url}/studies/{match['StudyInstanceUID']}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{match['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{match['SOPInstanceUID']}"
    out["00081190"] = {"vr": "UR", "Value": [url]}
    # "" when the engine answered it (it is not an index column); NEARLINE from an upstream.
    out["00080056"] = {"vr": "CS", "Value": [str(match.get(AVAILABILITY) or "ONLINE")]}
    return dict(sorted(out.items()))
