"""Database setup: one peewee database object for the process, bound at start.

``[storage].database`` is a path (SQLite, the embedded default) or a URL
``postgresql://user:password@host:port/db`` (PostgreSQL through psycopg 3).

SQLite runs in WAL mode (many readers, one writer) with a busy timeout;
peewee keeps one connection per thread, which suits pynetdicom's thread per
association.  Write transactions are taken IMMEDIATE so that two writers
queue on the busy timeout instead of failing on a read-to-write upgrade.

PostgreSQL connections come from a pool: a thread takes one on first use and
keeps it for its life (as with SQLite), and gives it back when it ends, so
that the thread per association and uvicorn's worker threads reuse
connections instead of paying a backend start each.  Write transactions take
one transaction-scoped advisory lock: one writer at a time, as on SQLite, so
every read-check-write of the index means the same on both (and across
processes sharing the database).

Portable SQL: the rules every statement of the index follows
--------------------------------------------------------------

All SQL lives in ``node/index/``.  Prefer peewee queries; hand-written SQL
(the hot paths) follows these rules, so that it runs unchanged on SQLite and
PostgreSQL.  The suite runs on both (``make test``), which checks them.

1. Parameters are written ``?`` and the statement runs through
   :func:`execute`, which gives them the database's own placeholder
   (``%s`` for psycopg) and doubles a literal ``%``.  Values are always
   parameters: no ``?`` inside a string literal of the SQL text.
2. New ids come back with ``RETURNING "id"``; never ``lastrowid`` or
   ``last_insert_rowid()``.
3. Upserts are ``INSERT ... ON CONFLICT (<a unique index's columns>) DO
   UPDATE SET c = excluded.c`` or ``DO NOTHING``; never ``INSERT OR
   REPLACE`` / ``OR IGNORE`` / ``REPLACE INTO``.
4. Time: timestamps are naive UTC (``models.utcnow()``), passed as
   parameters; no ``CURRENT_TIMESTAMP``, ``now()``, ``datetime('now')``,
   ``julianday`` or ``strftime`` (their time zone and text form differ).
5. Types are strict on PostgreSQL: bind ``int`` for INTEGER columns,
   ``str`` for TEXT, ``bool`` for BOOLEAN (never 0/1 literals); never
   compare a text column with a number.  Integers are 64-bit on both.
6. Functions: only those both share (COUNT, SUM, MIN, MAX, COALESCE, CASE,
   LENGTH, SUBSTR...).  Anything else (string aggregation, OFFSET without
   LIMIT, ...) is chosen by :func:`is_postgres` in ``node/index/``.
7. Text compares by code point on both (PostgreSQL columns are created
   ``COLLATE "C"``); LIKE is case-sensitive on both and always carries
   ``ESCAPE '!'`` with the value escaped (``query._like_pattern``); no
   ILIKE, GLOB, REGEXP or ``COLLATE NOCASE``.  Case-insensitive matching
   goes through the case-folded ``*_key`` columns.
8. ``ORDER BY`` a nullable column says ``NULLS FIRST`` or ``NULLS LAST``
   (SQLite puts NULLs first, PostgreSQL last).  ``GROUP BY`` names every
   selected column that is not aggregated.
9. Every read-check-write runs in :func:`write_transaction` and stays
   short (no network or file I/O inside).  A database error aborts a
   PostgreSQL transaction: never catch one and go on in the same
   transaction (use a nested ``db.atomic()``, a savepoint, if you must).
10. Text holds no NUL character (PostgreSQL refuses it).
11. DDL is written in the SQLite spelling of the first migrations and run
    through ``node.index.ddl.execute`` (see that module for what it
    translates and what it refuses).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

log = logging.getLogger(__name__)

database = peewee.DatabaseProxy()

BUSY_TIMEOUT_MS = 30_000

# PostgreSQL: give up reaching the server after this long (start-up says so).
CONNECT_TIMEOUT_S = 10
# A thread waits this long for a pooled connection when all are in use.
POOL_WAIT_S = 30
# Connections older than this are closed when they come back to the pool.
POOL_RECYCLE_S = 3600
DEFAULT_POOL_SIZE = 50
# The advisory lock every write transaction takes (an arbitrary constant: "DCMN").
WRITE_LOCK_KEY = 0x44434D4E

_URL_SCHEMES = ("postgresql", "postgres")


class DatabaseUnavailable(OSError):
    """The index database cannot be opened; the message names it (without its password)."""


def is_url(target: object) -> bool:
    """True when *target* (a ``[storage].database`` value) is a PostgreSQL URL, not a path."""
    return isinstance(target, str) and urlsplit(target).scheme.lower() in _URL_SCHEMES


def redact(target: object) -> str:
    """*target* fit for a log line or an error: a URL's password replaced by ``***``."""
    text = str(target)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostinfo}"
    query = "&".join(
        "password=***" if item.split("=", 1)[0].lower() == "password" else item
        for item in parts.query.split("&")
        if item
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_postgres(db: peewee.Database | None = None) -> bool:
    """True when *db* (default: the bound database) is PostgreSQL."""
    return isinstance(db if db is not None else database.obj, peewee.PostgresqlDatabase)


def open_database(
    target: Path | str, *, durable: bool = True, pool_size: int = DEFAULT_POOL_SIZE
) -> peewee.Database:
    """Open the index named by *target* (a path or a PostgreSQL URL) and bind the models to it."""
    db = _open_postgres(target, durable, pool_size) if is_url(target) else _open_sqlite(Path(target), durable)
    database.initialize(db)
    return db


def _open_sqlite(path: Path, durable: bool) -> peewee.SqliteDatabase:
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("index: SQLite %s at %s", sqlite3.sqlite_version, path)
    return peewee.SqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "busy_timeout": BUSY_TIMEOUT_MS,
            # FULL: a commit is on disk before we acknowledge the instance.
            "synchronous": "full" if durable else "normal",
            "foreign_keys": 1,
            "cache_size": -16_000,
            # DICOM matching is case-sensitive (person names match on their
            # case-folded copy), as LIKE is in PostgreSQL; see index/query.py.
            "case_sensitive_like": 1,
        },
        timeout=BUSY_TIMEOUT_MS / 1000,
    )


# -- PostgreSQL ----------------------------------------------------------------------


def _open_postgres(url: str, durable: bool, pool_size: int) -> peewee.PostgresqlDatabase:
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - psycopg is a dependency
        raise DatabaseUnavailable(
            f"{redact(url)}: PostgreSQL needs the psycopg package (pip install 'psycopg[binary]')"
        ) from None
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DatabaseUnavailable(f"{redact(url)}: not a valid PostgreSQL URL ({exc})") from None
    dbname = params.pop("dbname", None)
    if not dbname:
        raise DatabaseUnavailable(f"{redact(url)}: the URL names no database (.../dbname)")
    # Every session: UTC (timestamps are naive UTC), waits on locks bounded like
    # SQLite's busy timeout, and a transaction left open by a stuck thread ends.
    options = [
        "-c TimeZone=UTC",
        f"-c lock_timeout={BUSY_TIMEOUT_MS}",
        "-c idle_in_transaction_session_timeout=600000",
        # JIT compiles a plan whose estimate is high (a page of studies with its
        # counting sub-queries): 0.1-0.3 s spent before the first row of a C-FIND.
        "-c jit=off",
    ]
    if not durable:
        # [storage].fsync = false: like SQLite's synchronous=normal, a crash may
        # lose the last commits but never corrupts the index.
        options.append("-c synchronous_commit=off")
    if params.get("options"):
        options.insert(0, str(params.pop("options")))
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    params.setdefault("application_name", "dicom-node")
    db = _ThreadPooledPostgres(
        dbname,
        max_connections=pool_size,
        stale_timeout=POOL_RECYCLE_S,
        timeout=POOL_WAIT_S,
        options=" ".join(options),
        **params,
    )
    db.described = redact(url)
    _check_server(db)
    return db


def _check_server(db: peewee.PostgresqlDatabase) -> None:
    """Reach the server once at start, so that a wrong URL or a down server is one clear line."""
    try:
        with db.connection_context():
            encoding = db.execute_sql("SHOW server_encoding").fetchone()[0]
    except peewee.DatabaseError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseUnavailable(f"cannot open the index database {db.described}: {reason}") from None
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise DatabaseUnavailable(
            f"the index database {db.described} is encoded {encoding}; it must be UTF8 "
            "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)"
        )
    major, minor = divmod(db.server_version or 0, 10_000)
    log.info("index: PostgreSQL %d.%d at %s", major, minor, db.described)


class _ThreadPooledPostgres(PooledPostgresqlDatabase):
    """A pool whose connections come back when the thread holding one has ended.

    peewee hands each thread its own connection, which returns to the pool
    only on ``close()``.  Threads here come and go without closing (one per
    association, uvicorn's worker threads), so the pool notes which thread
    took each connection and, whenever it has none idle, takes back (rolled
    back if need be) those of threads that have ended before it opens a new
    one.
    """

    described = ""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["prefer_psycopg3"] = True
        self._owners: dict[int, threading.Thread] = {}
        super().__init__(*args, **kwargs)

    def _connect(self):
        with self._pool_lock:
            if not self._connections:
                self._reclaim()
            conn = super()._connect()
            self._owners[id(conn)] = threading.current_thread()
            return conn

    def connect(self, reuse_if_open: bool = False) -> bool:
        try:
            return super().connect(reuse_if_open)
        except MaxConnectionsExceeded:
            raise MaxConnectionsExceeded(
                f"all {self._max_connections} connections to {self.described} stayed in use "
                f"for {POOL_WAIT_S}s ([storage].database_connections)"
            ) from None

    def _close(self, conn, close_conn: bool = False) -> None:
        with self._pool_lock:
            self._owners.pop(id(conn), None)
            super()._close(conn, close_conn)

    def begin(self, *args, **kwargs) -> None:
        try:
            if getattr(self._state, "take_write_lock", False):
                # BEGIN and the write lock in one round trip (simple protocol, no parameters).
                self._state.take_write_lock = False
                with peewee.__exception_wrapper__:
                    self.cursor().execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
                return
            super().begin(*args, **kwargs)
        except peewee.DatabaseError:
            self._drop_if_broken()
            raise

    def execute_sql(self, sql, params=None):
        try:
            return super().execute_sql(sql, params)
        except peewee.DatabaseError:
            self._drop_if_broken()
            raise

    def rollback(self) -> None:
        if self._drop_if_broken():
            return  # the server ended the session: its transaction is gone with it
        super().rollback()

    def _drop_if_broken(self) -> bool:
        """Discard this thread's connection if the server dropped it (a restart, a failover).

        peewee would hand the dead connection out again to every statement of
        the thread (the forwarder's and export workers' threads live as long
        as the node); discarded, the thread's next statement opens a new one.
        Inside a transaction it waits for the rollback, which comes here.
        """
        conn = None if self._state.closed else self._state.conn
        if conn is None or not (conn.broken or conn.closed) or self.in_transaction():
            return False
        log.warning("index: the connection to %s was lost; reconnecting on next use", self.described)
        self._close(conn, close_conn=True)
        self._state.reset()
        return True

    def _reclaim(self) -> None:
        for key, pooled in list(self._in_use.items()):
            owner = self._owners.get(key)
            if owner is not None and not owner.is_alive():
                self._close(pooled.connection)


# -- statements and transactions -------------------------------------------------------


# Writers of this process queue here rather than on SQLite's busy handler,
# which sleeps and polls: under concurrent ingest the database lock sat idle
# between holders for a good part of the time.  Other processes (a CLI import
# beside the server) still meet the busy timeout.  Re-entrant: a write
# transaction may nest another (peewee turns it into a savepoint).
# PostgreSQL's lock manager wakes a waiter at once, so it does without.
_write_lock = threading.RLock()


def execute(sql: str, params: list[object] | tuple[object, ...] = ()):
    """Run hand-written SQL (``?`` placeholders) on the bound database; returns the cursor.

    The index's hand-written statements are spelled with ``?``; this is the
    one place they are given the database's own placeholder, so they run on
    PostgreSQL (``%s``) as well as SQLite.  No statement of the index puts a
    literal question mark in its SQL text (values are always parameters).
    """
    db = database.obj
    if db.param != "?":
        sql = sql.replace("%", "%%").replace("?", db.param)
    return db.execute_sql(sql, params)


@contextmanager
def write_transaction() -> Iterator[None]:
    """A short write transaction: one writer at a time, on SQLite and PostgreSQL alike."""
    db = database.obj
    if isinstance(db, peewee.SqliteDatabase):
        with _write_lock:
            try:
                with db.atomic("IMMEDIATE"):
                    yield
            except peewee.OperationalError as exc:
                # A COMMIT that fails under SQLITE_FULL (or an I/O error) is rolled
                # back by SQLite itself; peewee's ROLLBACK then fails with "cannot
                # rollback - no transaction is active", hiding the real error.
                # Raise the real one (as the cause, so its own chain stays whole).
                hidden = _hidden_by_rollback(exc)
                if hidden is None:
                    raise
                raise peewee.OperationalError(str(hidden)) from hidden
        return
    outermost = db.transaction_depth() == 0
    merged = outermost and isinstance(db, _ThreadPooledPostgres)
    if merged:
        db._state.take_write_lock = True  # taken with the BEGIN (see _ThreadPooledPostgres.begin)
    try:
        with db.atomic():
            if outermost and not merged:
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            yield
    finally:
        if merged:
            db._state.take_write_lock = False


def _hidden_by_rollback(exc: BaseException) -> BaseException | None:
    """The error a failed ROLLBACK ("no transaction is active") was raised while handling."""
    if "no transaction is active" not in str(exc):
        return None
    seen: set[int] = set()
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if "no transaction is active" not in str(current):
            return current
        current = current.__cause__ or current.__context__
    return None
