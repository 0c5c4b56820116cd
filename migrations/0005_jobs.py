"""One job table for every kind of long work; the export jobs move into it.

Each ``export_job`` row becomes a ``job`` row of kind "export" keyed by its
accession: a ready archive stays ready (its study version goes into the
payload, so the cache keeps working), and a job a stop interrupted while
queued, retrieving or zipping is queued again, to be resumed by the next
worker.  ``export_job`` is dropped.
"""

import datetime as dt
import json

from node.index.ddl import execute

STATEMENTS = [
    'CREATE TABLE "job" ("id" INTEGER NOT NULL PRIMARY KEY, "kind" TEXT NOT NULL, "key" TEXT,'
    ' "state" TEXT NOT NULL, "phase" TEXT NOT NULL, "done" INTEGER NOT NULL,'
    ' "failed" INTEGER NOT NULL, "total" INTEGER, "bytes" INTEGER NOT NULL,'
    ' "message" TEXT NOT NULL, "failure" TEXT NOT NULL, "attempts" INTEGER NOT NULL,'
    ' "not_before" DATETIME, "claimed_by" TEXT, "lease_until" DATETIME, "payload" TEXT NOT NULL,'
    ' "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL, "started_at" DATETIME,'
    ' "finished_at" DATETIME)',
    # NULL keys (jobs never shared, e.g. sends) are distinct on both databases.
    'CREATE UNIQUE INDEX "job_kind_key" ON "job" ("kind", "key")',
    'CREATE INDEX "job_state_kind" ON "job" ("state", "kind")',
]

_STATES = {
    "queued": "queued",
    "retrieving": "queued",
    "zipping": "queued",
    "ready": "done",
    "failed": "failed",
}
_COLUMNS = (
    "accession, state, failure, message, remote, study_uids, expected, received, instances, bytes,"
    " file_name, study_updated_at, created_at, updated_at, started_at, finished_at"
)
_INSERT = (
    'INSERT INTO "job" ("kind", "key", "state", "phase", "done", "failed", "total", "bytes", "message",'
    ' "failure", "attempts", "payload", "created_at", "updated_at", "started_at", "finished_at")'
    " VALUES ({})"
)


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)


def apply(db) -> None:
    execute(db, STATEMENTS)
    insert = _INSERT.format(", ".join([db.param] * 16))
    for row in db.execute_sql(f'SELECT {_COLUMNS} FROM "export_job" ORDER BY "id"').fetchall():
        (accession, state, failure, message, remote, study_uids, expected, received, instances, size,
         file_name, study_updated_at, created_at, updated_at, started_at, finished_at) = row  # fmt: skip
        payload = {
            "remote": remote,
            "study_uids": study_uids,
            "instances": instances,
            "file_name": file_name,
            "study_updated_at": _text(study_updated_at),
        }
        # An interrupted job keeps its step as the phase: a job cut short while
        # zipping had verified its retrieval already.
        phase = state if state in ("retrieving", "zipping") else ""
        db.execute_sql(
            insert,
            (
                "export", accession, _STATES.get(state, "queued"), phase, received, 0, expected, size,
                message, failure, 0, json.dumps(payload, separators=(",", ":")),
                created_at, updated_at, started_at, finished_at,
            ),
        )  # fmt: skip
    execute(db, ['DROP TABLE "export_job"'])
