"""The one query engine: a DICOM identifier (PS3.4 C.2.2.2 matching) as SQL over the index.

C-FIND, C-MOVE, C-GET and QIDO-RS are thin adapters over :func:`run` and
:func:`matching_instances`.  A :class:`Query` names the level, the matching
keys (keyword -> value as written in an identifier) and extra return keys;
every match comes back as a dict keyword -> value.

Matching (PS3.4 C.2.2.2): single value (case-sensitive, except person names),
wildcards ``*`` and ``?``, ranges of dates / times / date-times (closed and
open-ended), lists of values separated by ``\\`` (any may match), universal
matching (an empty value, or ``*``: the key is returned filled).  Person names
match case-insensitively through the case-folded ``*_key`` columns, so
Cyrillic works as well as ASCII.  Computed keys (counts, ModalitiesInStudy,
SOPClassesInStudy) are correlated sub-queries, evaluated by the database.

The SQL is plain ANSI with bound parameters and means the same on SQLite
and PostgreSQL (see the rules in ``node/index/db.py``): LIKE is
case-sensitive on both, text compares by code point on both, and a value
with wildcards also bounds its column as a range, so an index serves a
prefix on either.  The only dialect-dependent pieces (string aggregation,
OFFSET without LIMIT) are chosen in this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..uids import valid_uid
from . import catalog
from .db import execute, is_postgres

LEVELS = catalog.LEVELS
ROOTS = ("PATIENT", "STUDY", "PATIENT_STUDY_ONLY")

# Table alias and parent link of each level, top to bottom.
_TABLES = (
    ("patient", "p", None),
    ("study", "st", '"patient_id" = p."id"'),
    ("series", "se", '"study_id" = st."id"'),
    ("instance", "i", '"series_id" = se."id"'),
)
_ALIAS = {level: alias for level, (_, alias, _) in zip(LEVELS, _TABLES, strict=True)}

# Rows fetched from the cursor at a time while streaming matches.
_FETCH = 256
_ESCAPE = "!"


class QueryError(ValueError):
    """The identifier cannot be answered; the message names the offending key or value."""


@dataclass(frozen=True)
class Query:
    """What to look for.

    *filters* maps keywords to DICOM string values as they appear in an
    identifier (``"DOE*"``, ``"20240101-20240131"``, ``"1.2.3\\\\1.2.4"``;
    ``""`` asks for the attribute to be returned).  *root* is the
    information model: ``"PATIENT"``, ``"STUDY"`` or ``"PATIENT_STUDY_ONLY"``.
    *fuzzy* makes person-name matching match any name component by prefix.
    *newest_first* returns the matches last stored first (the console's
    lists); otherwise they come in the order they were stored.
    """

    level: str
    filters: dict[str, str]
    return_keys: tuple[str, ...] = ()
    root: str = "STUDY"
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    newest_first: bool = False


@dataclass(frozen=True)
class InstanceRef:
    """A stored instance that a retrieve sends (as the index knows it)."""

    id: int
    path: str  # relative to the store
    sop_class_uid: str
    sop_uid: str
    transfer_syntax: str
    size: int


# -- the attributes the index holds (node/index/catalog.py) ---------------------------


@dataclass(frozen=True)
class _Attr:
    keyword: str
    level: int  # index into LEVELS
    kind: str  # text, pn, uid, date, time, int, count, list
    sql: str  # expression returned (and matched, unless *match* is given)
    key_sql: str = ""  # case-folded column a person name is matched on
    # For computed multi-valued keys: the sub-query to match with EXISTS,
    # given the condition on its column alias "v".
    exists: Callable[[str], str] | None = None
    # Patient attributes: the study's own copy, answered at the STUDY level and below.
    study_sql: str = ""
    study_key_sql: str = ""

    def column(self, depth: int) -> str:
        """The expression answered at query depth *depth*."""
        return self.study_sql if self.study_sql and depth >= 1 else self.sql

    def key(self, depth: int) -> str:
        """The case-folded column a person name is matched on at *depth*."""
        return self.study_key_sql if self.study_key_sql and depth >= 1 else self.key_sql


def _agg_distinct(expr: str) -> str:
    """Distinct values of *expr* joined by commas (CS and UI values never contain a comma)."""
    if is_postgres():
        return f"string_agg(DISTINCT {expr}, ',')"
    return f"group_concat(DISTINCT {expr})"  # SQLite, MySQL


def _col(alias: str, column: str) -> str:
    return f'{alias}."{column}"'


_STUDY_INSTANCES = 'FROM instance x JOIN series y ON x."series_id" = y."id" WHERE y."study_id" = st."id"'

# The SQL of the computed keys of the catalogue (counts and value lists).
_COMPUTED: dict[str, tuple[str, Callable[[str], str] | None]] = {
    "NumberOfPatientRelatedStudies": ('(SELECT COUNT(*) FROM study x WHERE x."patient_id" = p."id")', None),
    "NumberOfPatientRelatedSeries": (
        '(SELECT COUNT(*) FROM series x JOIN study y ON x."study_id" = y."id" WHERE y."patient_id" = p."id")',
        None,
    ),
    "NumberOfPatientRelatedInstances": (
        '(SELECT COUNT(*) FROM instance x JOIN series y ON x."series_id" = y."id"'
        ' JOIN study z ON y."study_id" = z."id" WHERE z."patient_id" = p."id")',
        None,
    ),
    "NumberOfStudyRelatedSeries": ('(SELECT COUNT(*) FROM series x WHERE x."study_id" = st."id")', None),
    "NumberOfStudyRelatedInstances": (f"(SELECT COUNT(*) {_STUDY_INSTANCES})", None),
    "NumberOfSeriesRelatedInstances": (
        '(SELECT COUNT(*) FROM instance x WHERE x."series_id" = se."id")',
        None,
    ),
    # The returned lists are dialect-dependent aggregates: see _LIST_SQL.
    "ModalitiesInStudy": (
        "",
        lambda cond: (
            'EXISTS (SELECT 1 FROM series x WHERE x."study_id" = st."id" AND ' + cond('x."modality"') + ")"
        ),
    ),
    "SOPClassesInStudy": (
        "",
        lambda cond: f"EXISTS (SELECT 1 {_STUDY_INSTANCES} AND " + cond('x."sop_class_uid"') + ")",
    ),
}


def _attr(a: catalog.Attribute) -> _Attr:
    level = LEVELS.index(a.level)
    if a.computed:
        sql, exists = _COMPUTED[a.keyword]
        return _Attr(a.keyword, level, a.match, sql, exists=exists)
    alias = _ALIAS[a.level]
    return _Attr(
        a.keyword,
        level,
        a.match,
        _col(alias, a.column),
        _col(alias, a.key_column) if a.key_column else "",
        study_sql=_col("st", a.study_column) if a.study_column else "",
        study_key_sql=_col("st", a.study_key_column) if a.study_key_column else "",
    )


_ATTRS: dict[str, _Attr] = {a.keyword: _attr(a) for a in catalog.ATTRIBUTES}

_LIST_SQL = {
    "ModalitiesInStudy": lambda: (
        f"(SELECT {_agg_distinct('x.modality')} FROM series x"
        ' WHERE x."study_id" = st."id" AND x."modality" <> \'\')'
    ),
    "SOPClassesInStudy": lambda: f"(SELECT {_agg_distinct('x.sop_class_uid')} {_STUDY_INSTANCES})",
}

# The unique key of each level, and which levels make up each model's hierarchy.
_UNIQUE = tuple(catalog.unique_key(level).keyword for level in LEVELS)
_ROOT_LEVELS = {
    "PATIENT": (0, 1, 2, 3),
    "STUDY": (1, 2, 3),
    "PATIENT_STUDY_ONLY": (0, 1),
}


def supported_keys(level: str) -> frozenset[str]:
    """Keywords matchable or returnable at *level*, higher levels' keys included."""
    depth = _level_index(level)
    return frozenset(k for k, a in _ATTRS.items() if a.level <= depth)


def level_of(keyword: str) -> str | None:
    """The level whose key *keyword* is (e.g. "STUDY" for AccessionNumber); None if not held."""
    attr = _ATTRS.get(keyword)
    return LEVELS[attr.level] if attr else None


def unique_keys(query: Query) -> tuple[str, ...]:
    """The unique keys every match of *query* carries (its level's and those above, per model)."""
    depth = _level_index(query.level)
    return tuple(_UNIQUE[n] for n in _ROOT_LEVELS.get(query.root, (1, 2, 3)) if n <= depth)


# -- validation --------------------------------------------------------------------


def _level_index(level: str) -> int:
    try:
        return LEVELS.index(level)
    except ValueError:
        raise QueryError(f"QueryRetrieveLevel {level!r} is not one of {', '.join(LEVELS)}") from None


def _validate(query: Query) -> int:
    depth = _level_index(query.level)
    if query.root not in _ROOT_LEVELS:
        raise QueryError(f"unknown information model {query.root!r}")
    if depth not in _ROOT_LEVELS[query.root]:
        model = {"PATIENT": "Patient Root", "STUDY": "Study Root"}.get(query.root, "Patient/Study Only")
        raise QueryError(f"QueryRetrieveLevel {query.level} is not available in the {model} model")
    for keyword in (*query.filters, *query.return_keys):
        attr = _ATTRS.get(keyword)
        if attr is not None and attr.level > depth:
            raise QueryError(
                f"{keyword} is a {LEVELS[attr.level]} level key, below QueryRetrieveLevel {query.level}"
            )
    for keyword, value in query.filters.items():
        if keyword not in _ATTRS and value.strip() not in ("", "*"):
            raise QueryError(f"{keyword} is not supported as a matching key (value {value!r})")
    if query.limit is not None and query.limit < 0:
        raise QueryError(f"limit must not be negative: {query.limit}")
    if query.offset < 0:
        raise QueryError(f"offset must not be negative: {query.offset}")
    return depth


# -- matching -----------------------------------------------------------------------


def _like_pattern(value: str) -> str:
    """DICOM wildcards as a LIKE pattern, LIKE's own metacharacters escaped."""
    out = []
    for ch in value:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in ("%", "_", _ESCAPE):
            out.append(_ESCAPE + ch)
        else:
            out.append(ch)
    return "".join(out)


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with *prefix* (by code point)."""
    if not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return None
    code = ord(prefix[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:
        code = 0xE000  # surrogates cannot be encoded (PostgreSQL takes UTF-8 only)
    return prefix[:-1] + chr(code)


class _Where:
    """WHERE conditions with their bound parameters."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.params: list[object] = []

    def text(self, column: str, value: str) -> str:
        """One condition on a text column: exact, or LIKE when *value* has wildcards."""
        if "*" not in value and "?" not in value:
            self.params.append(value)
            return f"{column} = ?"
        prefix = re.split(r"[*?]", value, maxsplit=1)[0]
        parts = []
        # A literal prefix also bounds the column as a range: an index serves
        # it on any database, whatever its LIKE collation.
        if prefix:
            parts.append(f"{column} >= ?")
            self.params.append(prefix)
            upper = _successor(prefix)
            if upper is not None:
                parts.append(f"{column} < ?")
                self.params.append(upper)
        parts.append(f"{column} LIKE ? ESCAPE '{_ESCAPE}'")
        self.params.append(_like_pattern(value))
        return " AND ".join(parts)

    def fuzzy_name(self, column: str, value: str) -> str:
        """Any component (family, given, middle, ... or a word of one) starts with *value*."""
        pattern = _like_pattern(value.rstrip("*")) + "%"
        alternatives = []
        for lead in ("", "%^", "% ", "%="):
            alternatives.append(f"{column} LIKE ? ESCAPE '{_ESCAPE}'")
            self.params.append(lead + pattern)
        return "(" + " OR ".join(alternatives) + ")"

    def between(self, column: str, low: str, high: str) -> str:
        parts = [f"{column} <> ''"]
        if low:
            parts.append(f"{column} >= ?")
            self.params.append(low)
        if high:
            parts.append(f"{column} <= ?")
            self.params.append(high)
        return " AND ".join(parts)


_DATE_RE = re.compile(r"^\d{8}$")
_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def _date(keyword: str, value: str) -> str:
    value = value.replace(".", "") if len(value) == 10 else value  # ACR-NEMA "YYYY.MM.DD"
    if not _DATE_RE.match(value):
        raise QueryError(f"{keyword}: {value!r} is not a date (YYYYMMDD) or a date range")
    return value


def _time(keyword: str, value: str) -> str:
    value = value.replace(":", "")  # ACR-NEMA "HH:MM:SS"
    if not _TIME_RE.match(value):
        raise QueryError(f"{keyword}: {value!r} is not a time (HHMMSS.FFFFFF) or a time range")
    return value


def _time_upper(value: str) -> str:
    """The last stored time a (possibly partial) upper bound includes: 1015 -> 101599.999999."""
    whole, _, frac = value.partition(".")
    return whole.ljust(6, "9") + "." + (frac.ljust(6, "9") if frac else "999999")


def _condition(where: _Where, attr: _Attr, value: str, fuzzy: bool, depth: int) -> str | None:
    """The SQL condition for one matching key at query depth *depth*, or None for universal matching."""
    # Trailing NULs are DICOM padding (stored values are stripped alike);
    # one inside a value can match nothing, and PostgreSQL refuses it in text.
    value = value.strip().strip("\0").strip()
    if "\0" in value:
        raise QueryError(f"{attr.keyword}: a value must not contain a NUL character")
    if value in ("", "*") or attr.kind == "count":
        # Universal matching; counts are return keys only (PS3.4 C.6.1.1.4).
        return None
    if attr.exists is not None:
        return attr.exists(lambda column: _any_of(where, column, value, lambda c, v: where.text(c, v)))
    column = attr.column(depth)
    if attr.kind == "pn":
        key = attr.key(depth)
        if fuzzy:
            return _any_of(where, key, value, lambda c, v: where.fuzzy_name(c, v.casefold()))
        return _any_of(where, key, value, lambda c, v: where.text(c, v.casefold()))
    if attr.kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        for uid in uids:
            if not valid_uid(uid):
                raise QueryError(f"{attr.keyword}: {uid[:80]!r} is not a valid UID")
        where.params.extend(uids)
        return f"{column} IN ({', '.join('?' * len(uids))})"
    if attr.kind == "int":
        numbers = []
        for item in value.split("\\"):
            try:
                numbers.append(int(item.strip()))
            except ValueError:
                raise QueryError(f"{attr.keyword}: {item!r} is not an integer") from None
        where.params.extend(numbers)
        return f"{column} IN ({', '.join('?' * len(numbers))})"
    if attr.kind in ("date", "time"):
        parse = _date if attr.kind == "date" else _time
        return _any_of(where, column, value, lambda c, v: _range(where, attr, c, v, parse))
    return _any_of(where, column, value, where.text)


def _range(where: _Where, attr: _Attr, column: str, value: str, parse) -> str:
    if "*" in value or "?" in value:
        raise QueryError(f"{attr.keyword}: wildcards are not allowed in a date or time ({value!r})")
    low, dash, high = value.partition("-")
    low = parse(attr.keyword, low) if low else ""
    high = parse(attr.keyword, high) if high else ""
    if not dash:
        if attr.kind == "date":
            where.params.append(low)
            return f"{column} = ?"
        high = low  # a single (possibly partial) time: the span it names
    if not low and not high:
        raise QueryError(f"{attr.keyword}: {value!r} is a range without bounds")
    if attr.kind == "time" and high:
        high = _time_upper(high)
    return where.between(column, low, high)


def _any_of(where: _Where, column: str, value: str, one: Callable[[str, str], str]) -> str:
    """Value multiplicity in a key (``A\\B``): a match on any value matches."""
    items = [v.strip() for v in value.split("\\") if v.strip()]
    if not items:
        return "1 = 1"
    conds = [one(column, v) for v in items]
    return conds[0] if len(conds) == 1 else "(" + " OR ".join(f"({c})" for c in conds) + ")"


# -- building and running the SQL ---------------------------------------------------


def _from(depth: int) -> str:
    sql = "FROM patient p"
    for table, alias, link in _TABLES[1 : depth + 1]:
        sql += f" JOIN {table} {alias} ON {alias}.{link}"
    return sql


def _select_sql(attr: _Attr, depth: int) -> str:
    return _LIST_SQL[attr.keyword]() if attr.kind == "list" else attr.column(depth)


def _where(query: Query, depth: int) -> _Where:
    where = _Where()
    for keyword, value in query.filters.items():
        attr = _ATTRS.get(keyword)
        if attr is None:
            continue
        cond = _condition(where, attr, value, query.fuzzy, depth)
        if cond is not None:
            where.sql.append(cond)
    return where


def _paging(query: Query) -> tuple[str, list[object]]:
    if query.limit is None and not query.offset:
        return "", []
    if query.limit is None:
        # SQLite needs a LIMIT before OFFSET; -1 means none there.
        if is_postgres():
            return " OFFSET ?", [query.offset]
        return " LIMIT -1 OFFSET ?", [query.offset]
    return " LIMIT ? OFFSET ?", [query.limit, query.offset]


def _convert(attr: _Attr | None, value: object) -> object:
    if attr is None:
        return ""
    if attr.kind == "list":
        return sorted(v for v in str(value).split(",") if v) if value else []
    if attr.kind == "count":
        return int(value or 0)
    if value is None:
        return ""
    return value


def returned_keys(query: Query) -> tuple[str, ...]:
    """The keywords every match of *query* carries, in order: unique keys, then those asked for."""
    keys: list[str] = list(unique_keys(query))
    for keyword in (*query.filters, *query.return_keys):
        if keyword not in keys:
            keys.append(keyword)
    return tuple(keys)


def run(query: Query) -> Iterator[dict[str, object]]:
    """Stream the matches of *query* (stable order), each a dict keyword -> value.

    Text values are ``str`` (person names as stored), counts and numbers
    ``int``, ModalitiesInStudy / SOPClassesInStudy ``list[str]``; a requested
    attribute the index does not hold is ``""``.  Raises QueryError (before
    yielding anything) for an identifier that cannot be answered.
    """
    keys = returned_keys(query)
    attrs = [_ATTRS.get(k) for k in keys]
    selected = [(n, a) for n, a in enumerate(attrs) if a is not None]
    sql, params = _select(query, [a for _, a in selected])
    return _stream(execute(sql, params), keys, attrs, selected)


def _select(query: Query, selected: list[_Attr]) -> tuple[str, list[object]]:
    depth = _validate(query)
    where = _where(query, depth)
    columns = ", ".join(_select_sql(a, depth) for a in selected) or "1"
    conditions = " WHERE " + " AND ".join(where.sql) if where.sql else ""
    order = f' ORDER BY {_ALIAS[query.level]}."id"' + (" DESC" if query.newest_first else "")
    paging, paging_params = _paging(query)
    if not paging:
        return f"SELECT {columns} {_from(depth)}{conditions}{order}", where.params
    # A page is chosen by id first, and only its rows get the returned columns:
    # PostgreSQL computes the select list (the counting sub-queries) for every
    # row an OFFSET skips, 0.35 s for a page at offset 10,000 of 20,000 studies.
    page = f'SELECT {_ALIAS[query.level]}."id" {_from(depth)}{conditions}{order}{paging}'
    sql = f'SELECT {columns} {_from(depth)} WHERE {_ALIAS[query.level]}."id" IN ({page}){order}'
    return sql, where.params + paging_params


def explain(query: Query) -> list[str]:
    """The database's plan for *query* (EXPLAIN QUERY PLAN / EXPLAIN), one line per step."""
    selected = [a for a in map(_ATTRS.get, returned_keys(query)) if a is not None]
    sql, params = _select(query, selected)
    if is_postgres():
        return [row[0] for row in execute("EXPLAIN " + sql, params).fetchall()]
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in execute("EXPLAIN QUERY PLAN " + sql, params).fetchall():
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return lines


def _stream(cursor, keys, attrs, selected) -> Iterator[dict[str, object]]:
    try:
        while rows := cursor.fetchmany(_FETCH):
            for row in rows:
                values: list[object] = [""] * len(keys)
                for col, (n, attr) in enumerate(selected):
                    values[n] = _convert(attr, row[col])
                yield dict(zip(keys, values, strict=True))
    finally:
        cursor.close()


def matching_instances(query: Query) -> list[InstanceRef]:
    """Every stored instance under the matches of *query* (what C-MOVE / C-GET send).

    The identifier must constrain something: a retrieve of the whole archive
    by universal matching is refused.  Instances come in series / instance
    number order.
    """
    depth = _validate(query)
    where = _where(query, depth)
    if not where.sql:
        raise QueryError(
            "the identifier has no key with a value: name what to retrieve (e.g. StudyInstanceUID)"
        )
    sql = (
        'SELECT i."id", i."path", i."sop_class_uid", i."sop_uid", i."transfer_syntax", i."size" '
        + _from(3)
        + " WHERE "
        + " AND ".join(where.sql)
        # NULLS FIRST on both (SQLite's default, not PostgreSQL's).
        + ' ORDER BY st."id", se."series_number" NULLS FIRST, se."id",'
        + ' i."instance_number" NULLS FIRST, i."id"'
    )
    cursor = execute(sql, where.params)
    try:
        return [InstanceRef(*row) for row in cursor.fetchall()]
    finally:
        cursor.close()
