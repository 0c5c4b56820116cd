"""What a failed write of the index or the store means: full, or something else.

The ingest path answers "out of resources" (C-STORE 0xA700, STOW-RS 507)
when the disk or the database cannot grow, and a processing failure
otherwise, naming the cause either way.  Which exceptions mean "full" is
database-specific, hence this module in ``node/index``.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
# PostgreSQL SQLSTATE class 53: insufficient resources (53100 disk_full, ...).
_PG_RESOURCES = "53"


def causes(exc: BaseException) -> Iterator[BaseException]:
    """*exc* and the exceptions it was raised from or while handling, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    pgcode = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
    if isinstance(pgcode, str) and pgcode.startswith(_PG_RESOURCES):
        return True
    return "database or disk is full" in str(exc)


def is_full(exc: BaseException) -> bool:
    """True when *exc* (or what it was raised from) says the disk or the database is full."""
    return any(_full(e) for e in causes(exc))


def root_cause(exc: BaseException) -> BaseException:
    """The exception that says what went wrong: the 'full' one if any, else *exc* itself.

    A failed COMMIT under SQLITE_FULL is rolled back by SQLite itself, so the
    ROLLBACK that follows fails with "cannot rollback - no transaction is
    active" and hides the real error; the real one is in its context.
    """
    return next((e for e in causes(exc) if _full(e)), exc)


def describe(exc: BaseException) -> str:
    """A short text of the root cause: its message, or its type when it has none."""
    cause = root_cause(exc)
    text = str(cause).strip()
    if isinstance(cause, OSError) and cause.strerror:
        text = cause.strerror + (f": {cause.filename}" if cause.filename else "")
    return text or type(cause).__name__
