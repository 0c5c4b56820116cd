"""Patient attributes per study: each study keeps the patient's name, birth date, sex and IDs
as its own instances hold them (answered at the STUDY, SERIES and IMAGE levels).

An existing index knew only one set of values per patient (the latest
received); every study starts from those, and later instances of a study set
its own.  Other Patient IDs are new on both levels.
"""

from node.index.ddl import execute

_STUDY_COPIES = {
    "patient_name": "patient_name",
    "patient_name_key": "patient_name_key",
    "patient_birth_date": "birth_date",
    "patient_sex": "sex",
    "issuer_of_patient_id": "issuer_of_patient_id",
}

STATEMENTS = [
    'ALTER TABLE "patient" ADD COLUMN "other_patient_ids" TEXT NOT NULL DEFAULT \'\'',
    *(f'ALTER TABLE "study" ADD COLUMN "{column}" TEXT NOT NULL DEFAULT \'\'' for column in _STUDY_COPIES),
    'ALTER TABLE "study" ADD COLUMN "other_patient_ids" TEXT NOT NULL DEFAULT \'\'',
    'UPDATE "study" SET '
    + ", ".join(
        f'"{column}" = (SELECT p."{source}" FROM "patient" p WHERE p."id" = "study"."patient_id")'
        for column, source in _STUDY_COPIES.items()
    ),
    'CREATE INDEX "study_patient_name_key" ON "study" ("patient_name_key")',
]


def apply(db) -> None:
    execute(db, STATEMENTS)
