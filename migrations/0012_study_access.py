"""A bounded store: when each study was last read, and what was evicted and where its copy is.

- ``study.accessed_at``: the last WADO-RS / C-MOVE / C-GET / ZIP export read
  of the study (written at most once a minute per study, node/cache/access.py);
  NULL until the first read.  Eviction orders studies by the later of it and
  ``updated_at`` (the last change), so a study never read ages from its arrival.
- ``evicted_study``: one row per study the eviction removed, naming the
  remotes that hold it (space-separated names from the config), so that a
  later request for it knows where to fetch it again.
"""

from node.index.ddl import execute

STATEMENTS = [
    'ALTER TABLE "study" ADD COLUMN "accessed_at" DATETIME',
    'CREATE TABLE "evicted_study" ("id" INTEGER NOT NULL PRIMARY KEY, "study_uid" TEXT NOT NULL,'
    ' "patient_id" TEXT NOT NULL, "accession_number" TEXT NOT NULL, "remotes" TEXT NOT NULL,'
    ' "reason" TEXT NOT NULL, "instances" INTEGER NOT NULL, "bytes" INTEGER NOT NULL,'
    ' "evictions" INTEGER NOT NULL, "evicted_at" DATETIME NOT NULL)',
    'CREATE UNIQUE INDEX "evicted_study_study_uid" ON "evicted_study" ("study_uid")',
    'CREATE INDEX "evicted_study_accession_number" ON "evicted_study" ("accession_number")',
]


def apply(db) -> None:
    execute(db, STATEMENTS)
