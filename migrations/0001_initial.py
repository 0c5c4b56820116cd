"""The four index levels: patient, study, series, instance."""

from node.index.ddl import execute

STATEMENTS = [
    'CREATE TABLE "patient" ("id" INTEGER NOT NULL PRIMARY KEY, "patient_id" TEXT NOT NULL,'
    ' "patient_name" TEXT NOT NULL, "patient_name_key" TEXT NOT NULL, "birth_date" TEXT NOT NULL,'
    ' "sex" TEXT NOT NULL, "issuer_of_patient_id" TEXT NOT NULL, "charset" TEXT NOT NULL,'
    ' "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL)',
    'CREATE UNIQUE INDEX "patient_patient_id" ON "patient" ("patient_id")',
    'CREATE INDEX "patient_patient_name_key" ON "patient" ("patient_name_key")',
    'CREATE TABLE "study" ("id" INTEGER NOT NULL PRIMARY KEY, "study_uid" TEXT NOT NULL,'
    ' "patient_id" INTEGER NOT NULL, "study_date" TEXT NOT NULL, "study_time" TEXT NOT NULL,'
    ' "accession_number" TEXT NOT NULL, "study_id" TEXT NOT NULL,'
    ' "study_description" TEXT NOT NULL, "referring_physician" TEXT NOT NULL,'
    ' "referring_physician_key" TEXT NOT NULL, "institution_name" TEXT NOT NULL,'
    ' "charset" TEXT NOT NULL, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL,'
    ' FOREIGN KEY ("patient_id") REFERENCES "patient" ("id") ON DELETE CASCADE)',
    'CREATE UNIQUE INDEX "study_study_uid" ON "study" ("study_uid")',
    'CREATE INDEX "study_patient_id" ON "study" ("patient_id")',
    'CREATE INDEX "study_study_date" ON "study" ("study_date")',
    'CREATE INDEX "study_accession_number" ON "study" ("accession_number")',
    'CREATE TABLE "series" ("id" INTEGER NOT NULL PRIMARY KEY, "series_uid" TEXT NOT NULL,'
    ' "study_id" INTEGER NOT NULL, "modality" TEXT NOT NULL, "series_number" INTEGER,'
    ' "series_description" TEXT NOT NULL, "series_date" TEXT NOT NULL,'
    ' "series_time" TEXT NOT NULL, "body_part_examined" TEXT NOT NULL,'
    ' "protocol_name" TEXT NOT NULL, "created_at" DATETIME NOT NULL,'
    ' "updated_at" DATETIME NOT NULL,'
    ' FOREIGN KEY ("study_id") REFERENCES "study" ("id") ON DELETE CASCADE)',
    'CREATE UNIQUE INDEX "series_series_uid" ON "series" ("series_uid")',
    'CREATE INDEX "series_study_id" ON "series" ("study_id")',
    'CREATE INDEX "series_modality" ON "series" ("modality")',
    'CREATE TABLE "instance" ("id" INTEGER NOT NULL PRIMARY KEY, "sop_uid" TEXT NOT NULL,'
    ' "series_id" INTEGER NOT NULL, "sop_class_uid" TEXT NOT NULL, "instance_number" INTEGER,'
    ' "transfer_syntax" TEXT NOT NULL, "rows" INTEGER, "columns" INTEGER,'
    ' "number_of_frames" INTEGER, "content_date" TEXT NOT NULL, "content_time" TEXT NOT NULL,'
    ' "charset" TEXT NOT NULL, "path" TEXT NOT NULL, "size" INTEGER NOT NULL,'
    ' "received_at" DATETIME NOT NULL, "calling_aet" TEXT NOT NULL, "source" TEXT NOT NULL,'
    ' FOREIGN KEY ("series_id") REFERENCES "series" ("id") ON DELETE CASCADE)',
    'CREATE UNIQUE INDEX "instance_sop_uid" ON "instance" ("sop_uid")',
    'CREATE INDEX "instance_series_id" ON "instance" ("series_id")',
]


def apply(db) -> None:
    execute(db, STATEMENTS)
