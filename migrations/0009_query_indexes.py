"""Indexes the query engine needs at a million instances (bench/big_index.py, EXPLAIN).

The engine matches ReferringPhysicianName on its case-folded copy, as a
range plus LIKE (like PatientName, whose key was indexed from the start);
without an index that was a full scan of the studies: 6-16 ms at 20,000
studies, growing with the archive.  The other query types of the benchmark
(AccessionNumber, PatientID, PatientName prefix, StudyDate range, the
counting sub-queries over instance.series_id and series.study_id) already
use indexes on SQLite and PostgreSQL.
"""

from node.index.ddl import execute

STATEMENTS = [
    'CREATE INDEX "study_referring_physician_key" ON "study" ("referring_physician_key")',
]


def apply(db) -> None:
    execute(db, STATEMENTS)
