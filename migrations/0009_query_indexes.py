"""Indexes the query engine needs at a million instances (bench/big_index.py, EXPLAIN).

- ReferringPhysicianName is matched on its case-folded copy, as a range
  plus LIKE (like PatientName, whose key was indexed from the start);
  without an index that was a full scan of the studies: 6-16 ms at 20,000
  studies, growing with the archive.
- series (study_id, modality): ModalitiesInStudy=MR with a StudyDate range
  took 2.6 s on an SQLite index that was never ANALYZEd (the node never
  runs ANALYZE): without statistics SQLite probed series by modality alone
  for every study; with both columns in one index it takes 11 ms, and the
  modalities of a study are read from the index alone.  It replaces the
  index on study_id, its prefix.

The other query types of the benchmark (AccessionNumber, PatientID,
PatientName prefix, StudyDate range, the counting sub-queries over
instance.series_id) already use indexes on SQLite and PostgreSQL.
"""

from node.index.ddl import execute

STATEMENTS = [
    'CREATE INDEX "study_referring_physician_key" ON "study" ("referring_physician_key")',
    'CREATE INDEX "series_study_id_modality" ON "series" ("study_id", "modality")',
    'DROP INDEX "series_study_id"',
]


def apply(db) -> None:
    execute(db, STATEMENTS)
