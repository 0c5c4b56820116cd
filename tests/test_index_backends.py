"""The index means the same on SQLite and PostgreSQL: DDL, types, text order, locks, start-up.

These run on whichever backend the suite runs on ($DICOM_NODE_TEST_DB); the
pool test needs PostgreSQL by nature (SQLite has no connection pool).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from pathlib import Path

import peewee
import pytest
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from node.index import db as index_db
from node.index import ddl
from node.index import query as q
from node.index.migrate import migrate
from node.index.models import BaseModel, utcnow
from node.ingest import Ingest, Source
from node.store import InstanceStore
from tests.harness import (
    PG_PASSWORD,
    REPO,
    PostgresServer,
    free_port,
    index_backend,
    index_database,
    index_rows,
    run_node,
    toml_text,
)

# Names whose order or prefix differs between byte order and a linguistic
# collation (the test server is initialised with en_US.UTF-8 on purpose).
NAMES = {
    "N1": "SMITH^JOHN",
    "N2": "SMITH-JONES^ANN",
    "N3": "SMITHSON^PAUL",
    "N4": "SMITH^",
    "N5": "O'BRIEN^PAT",
    "N6": "Ærø^Åse",
}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> str:
    """A fresh index (this backend) holding one study per name; returns its database target."""
    root: Path = tmp_path_factory.mktemp("backends")
    ingest = Ingest(InstanceStore(root / "storage", fsync=False))
    target = index_database(root)
    migrate(index_db.open_database(target, durable=False))
    for accession, name in NAMES.items():
        ds = make_dataset(
            study_uid=generate_uid(),
            series_uid=generate_uid(),
            patient_id=f"P{accession}",
            patient_name=name,
            charset="ISO_IR 192",
            accession=accession,
        )
        assert ingest.ingest_file(write(ds, root / "in" / f"{accession}.dcm"), Source("import"), take=True).ok
    return target


def accessions(**filters: str) -> list[str]:
    return [m["AccessionNumber"] for m in q.run(q.Query("STUDY", {"AccessionNumber": "", **filters}))]


def test_prefix_matching_is_by_code_point_whatever_the_locale(index):
    # "SMITH^*": the prefix ends in "^"; under en_US collation "SMITH^JOHN" sorts
    # outside ["smith^", "smith_"), so a range that followed the locale would lose it.
    assert accessions(PatientName="SMITH^*") == ["N1", "N4"]
    assert accessions(PatientName="SMITH-*") == ["N2"]
    assert accessions(PatientName="SMITH*") == ["N1", "N2", "N3", "N4"]
    assert accessions(PatientName="o'brien*") == ["N5"]
    assert accessions(PatientName="ærø^å*") == ["N6"]  # case-folded, non-ASCII
    assert accessions(AccessionNumber="N?") == list(NAMES)


def test_text_order_is_by_code_point(index):
    rows = index_rows(index, 'SELECT "patient_name" FROM "patient" ORDER BY "patient_name"')
    assert [r[0] for r in rows] == sorted(NAMES.values())  # Python sorts by code point


def test_nul_in_a_value_is_refused_and_trailing_padding_ignored(index):
    with pytest.raises(q.QueryError, match="NUL"):
        q.run(q.Query("STUDY", {"AccessionNumber": "N\x001"}))
    assert accessions(AccessionNumber="N1\x00") == ["N1"]


class Probe(BaseModel):
    """A table of this test's own (other branches change the index's models)."""

    big = peewee.BigIntegerField()
    at = peewee.DateTimeField()

    class Meta:
        table_name = "probe_round_trip"


def test_big_integers_and_naive_utc_timestamps_round_trip(index):
    ddl.execute(
        index_db.database.obj,
        [
            'CREATE TABLE "probe_round_trip" ("id" INTEGER NOT NULL PRIMARY KEY, "big" INTEGER NOT NULL,'
            ' "at" DATETIME NOT NULL)'
        ],
    )
    try:
        now = utcnow()
        row = Probe.create(big=5 * 2**32 + 7, at=now)
        back = Probe.get_by_id(row.id)
        assert back.big == 5 * 2**32 + 7
        assert back.at == now and back.at.tzinfo is None
        # Compared as timestamps (a parameter), not as text.
        assert Probe.select().where(Probe.at > now - dt.timedelta(microseconds=1)).count() == 1
        assert Probe.select().where(Probe.at > now).count() == 0
    finally:
        index_db.execute('DROP TABLE "probe_round_trip"')


def test_ddl_translation_makes_the_same_table_on_both(index):
    db = index_db.database.obj
    ddl.execute(
        db,
        [
            'CREATE TABLE "ddl_probe" ("id" INTEGER NOT NULL PRIMARY KEY, "n" INTEGER NOT NULL,'
            ' "flag" BOOLEAN NOT NULL DEFAULT 0, "at" DATETIME, "ratio" REAL, "data" BLOB,'
            " \"note\" TEXT NOT NULL DEFAULT '50%')",
            'CREATE INDEX "ddl_probe_note" ON "ddl_probe" ("note") WHERE "flag"',
        ],
    )
    now = utcnow()
    (row_id,) = index_db.execute(
        'INSERT INTO "ddl_probe" ("n", "at", "ratio", "data") VALUES (?, ?, ?, ?) RETURNING "id"',
        [2**40, now, 0.5, b"\x00\x01"],
    ).fetchone()
    n, flag, ratio, data, note = index_db.execute(
        'SELECT "n", "flag", "ratio", "data", "note" FROM "ddl_probe" WHERE "id" = ?', [row_id]
    ).fetchone()
    assert (n, bool(flag), ratio, bytes(data), note) == (2**40, False, 0.5, b"\x00\x01", "50%")
    index_db.execute('DROP TABLE "ddl_probe"')


def test_ddl_refuses_sqlite_only_spelling():
    pg = peewee.PostgresqlDatabase("never-connected")
    translated = ddl.translate(
        pg, 'CREATE TABLE "t" ("id" INTEGER NOT NULL PRIMARY KEY, "a" TEXT, "b" INTEGER)'
    )
    assert translated == (
        'CREATE TABLE "t" ("id" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,'
        ' "a" TEXT COLLATE "C", "b" BIGINT)'
    )
    # Quoted names and literals are left alone.
    assert ddl.translate(pg, 'ALTER TABLE "t" ADD COLUMN "integer" TEXT NOT NULL DEFAULT \'INTEGER\'') == (
        'ALTER TABLE "t" ADD COLUMN "integer" TEXT COLLATE "C" NOT NULL DEFAULT \'INTEGER\''
    )
    for bad in (
        'CREATE TABLE "t" ("a" TEXT COLLATE NOCASE)',
        'CREATE TABLE "t" ("a" TEXT) WITHOUT ROWID',
        'CREATE TABLE "t" ("a" INTEGER AUTOINCREMENT)',
        "PRAGMA foreign_keys = 1",
        'CREATE TABLE "t" ("a" TEXT DEFAULT \'x)',
    ):
        with pytest.raises(ddl.DDLError):
            ddl.translate(pg, bad)


def test_write_transactions_are_one_at_a_time(index):
    entered: list[tuple[str, float, float]] = []

    def writer(name: str) -> None:
        with index_db.write_transaction():
            t0 = time.monotonic()
            index_db.execute('UPDATE "patient" SET "sex" = ? WHERE "patient_id" = ?', [name, "PN1"])
            time.sleep(0.3)
            entered.append((name, t0, time.monotonic()))

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    (_, a0, a1), (_, b0, b1) = sorted(entered, key=lambda e: e[1])
    assert b0 >= a1  # the second began only once the first had committed


@pytest.mark.skipif(index_backend() != "postgresql", reason="the connection pool is PostgreSQL's")
def test_pooled_connections_come_back_when_threads_end(index):
    db = index_db.open_database(index, durable=False, pool_size=3)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            q.run(q.Query("STUDY", {"AccessionNumber": "N1"})).close()
            with index_db.write_transaction():
                index_db.execute('UPDATE "patient" SET "sex" = ? WHERE "patient_id" = ?', ["O", "PN1"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    # Short-lived threads (as associations are), four at a time on three connections:
    # the fourth waits for one whose thread has ended.
    for _ in range(2):
        batch = [threading.Thread(target=work) for _ in range(4)]
        for t in batch:
            t.start()
        for t in batch:
            t.join(20)
    assert not errors
    assert len(db._in_use) + len(db._connections) <= 3
    db.close_all()


def _cli(tmp_path: Path, database: str, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "config.toml"
    config.write_text(toml_text({"storage": {"path": str(tmp_path / "storage"), "database": database}}))
    return run_node(*args, "--config", str(config), timeout=60)


def test_unreachable_database_stops_start_up_naming_it_without_the_password(tmp_path):
    port = free_port()  # nothing listens there
    result = _cli(tmp_path, f"postgresql://dicom:hunter2@127.0.0.1:{port}/archive", "migrate")
    assert result.returncode == 1
    assert f"cannot open the index database postgresql://dicom:***@127.0.0.1:{port}/archive" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_database_url_errors_name_the_key_without_the_password(tmp_path):
    result = _cli(tmp_path, "mysql://root:hunter2@127.0.0.1/db", "migrate")
    assert result.returncode == 2
    assert "[storage].database" in result.stderr and "hunter2" not in result.stderr
    result = _cli(tmp_path, "postgresql://root:hunter2@127.0.0.1:5432/", "migrate")
    assert result.returncode == 2
    assert "names no database" in result.stderr and "hunter2" not in result.stderr


def test_two_processes_migrating_one_fresh_database_apply_each_migration_once(tmp_path):
    target = index_database(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(toml_text({"storage": {"path": str(tmp_path / "storage"), "database": target}}))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "node", "migrate", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    names = [r[0] for r in index_rows(target, 'SELECT "name" FROM "schema_migration"')]
    assert sorted(names) == sorted(set(names)) and len(names) >= 3


def test_node_log_names_its_index_never_the_password(node):
    log = node.log()
    label = {"sqlite": "index: SQLite", "postgresql": "index: PostgreSQL"}[index_backend()]
    assert label in log
    assert PG_PASSWORD not in log


@pytest.mark.skipif(index_backend() != "postgresql", reason="a database server restart is PostgreSQL's")
def test_after_a_server_restart_a_thread_gets_a_new_connection():
    server = PostgresServer().start()  # its own: the session's server stays up for the others
    try:
        index_db.open_database(server.create_database(), durable=False)
        migrate(index_db.database.obj)
        assert index_db.execute('SELECT COUNT(*) FROM "patient"').fetchone() == (0,)
        server.restart()
        failures = 0
        for _ in range(3):
            try:
                with index_db.write_transaction():
                    index_db.execute('SELECT COUNT(*) FROM "patient"').fetchone()
            except peewee.DatabaseError:
                failures += 1  # the statement that finds the old connection dead
        assert failures <= 1
        assert index_db.execute('SELECT COUNT(*) FROM "patient"').fetchone() == (0,)
    finally:
        server.stop()
