"""Store-and-forward outbox: one row per (instance, forwarding remote)."""

from node.index.ddl import execute

STATEMENTS = [
    'CREATE TABLE "outbox" ("id" INTEGER NOT NULL PRIMARY KEY, "instance_id" INTEGER NOT NULL,'
    ' "remote" TEXT NOT NULL, "state" TEXT NOT NULL, "generation" INTEGER NOT NULL,'
    ' "attempts" INTEGER NOT NULL, "not_before" DATETIME, "status" INTEGER,'
    ' "error" TEXT NOT NULL, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL,'
    ' "done_at" DATETIME,'
    ' FOREIGN KEY ("instance_id") REFERENCES "instance" ("id") ON DELETE CASCADE)',
    'CREATE UNIQUE INDEX "outbox_instance_id_remote" ON "outbox" ("instance_id", "remote")',
    'CREATE INDEX "outbox_remote_state_id" ON "outbox" ("remote", "state", "id")',
    'CREATE INDEX "outbox_remote_state_done_at" ON "outbox" ("remote", "state", "done_at")',
]


def apply(db) -> None:
    execute(db, STATEMENTS)
