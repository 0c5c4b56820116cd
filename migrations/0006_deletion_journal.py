"""Deletion journal: files (and archives) whose index rows are gone, still to be removed."""

from node.index.ddl import execute

STATEMENTS = [
    'CREATE TABLE "pending_deletion" ("id" INTEGER NOT NULL PRIMARY KEY, "kind" TEXT NOT NULL,'
    ' "target" TEXT NOT NULL, "fingerprint" TEXT NOT NULL, "created_at" DATETIME NOT NULL)',
]


def apply(db) -> None:
    execute(db, STATEMENTS)
