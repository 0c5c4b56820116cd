"""Export jobs: one row per accession number (ZIP export with read-through retrieval)."""

from node.index.ddl import execute

STATEMENTS = [
    'CREATE TABLE "export_job" ("id" INTEGER NOT NULL PRIMARY KEY, "accession" TEXT NOT NULL,'
    ' "state" TEXT NOT NULL, "failure" TEXT NOT NULL, "message" TEXT NOT NULL,'
    ' "remote" TEXT NOT NULL, "study_uids" TEXT NOT NULL, "expected" INTEGER,'
    ' "received" INTEGER NOT NULL, "instances" INTEGER NOT NULL, "bytes" INTEGER NOT NULL,'
    ' "file_name" TEXT NOT NULL, "study_updated_at" DATETIME, "created_at" DATETIME NOT NULL,'
    ' "updated_at" DATETIME NOT NULL, "started_at" DATETIME, "finished_at" DATETIME)',
    'CREATE UNIQUE INDEX "export_job_accession" ON "export_job" ("accession")',
    'CREATE INDEX "export_job_state" ON "export_job" ("state")',
]


def apply(db) -> None:
    execute(db, STATEMENTS)
