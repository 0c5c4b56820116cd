"""peewee model of export jobs: one row per accession number (architecture principle 5).

The row is the job: its state, what it was retrieved from, the counts and
bytes so far, the reason it failed, and the study version (``updated_at``)
its archive was built from, so that a later request can tell a fresh
archive from a stale one.  ``accession`` is unique: two requests for the same
accession share the row.
"""

from __future__ import annotations

import peewee

from .models import BaseModel, utcnow

QUEUED = "queued"
RETRIEVING = "retrieving"
ZIPPING = "zipping"
READY = "ready"
FAILED = "failed"
ACTIVE_STATES = (QUEUED, RETRIEVING, ZIPPING)  # re-run at start after a restart

# Why a job failed (``failure``): decides the HTTP status of the answer.
NOT_FOUND = "not_found"  # no such accession anywhere
REMOTE = "remote"  # the remote could not be reached or refused
PARTIAL = "partial"  # fewer instances arrived than the remote announced
INTERNAL = "internal"  # anything else (disk full, ...)


class ExportJob(BaseModel):
    accession = peewee.TextField(unique=True)
    state = peewee.TextField(default=QUEUED, index=True)
    failure = peewee.TextField(default="")
    message = peewee.TextField(default="")
    # Name of the remote the study is retrieved from; "" when built from the local store.
    remote = peewee.TextField(default="")
    # Study Instance UIDs the remote announced (backslash-separated), and how
    # many instances it announced for them (None when it did not say).
    study_uids = peewee.TextField(default="")
    expected = peewee.IntegerField(null=True)
    received = peewee.IntegerField(default=0)
    instances = peewee.IntegerField(default=0)  # entries in the archive
    bytes = peewee.BigIntegerField(default=0)  # archive bytes written so far / its size
    file_name = peewee.TextField(default="")
    # max(Study.updated_at) of the accession's studies when the archive was built.
    study_updated_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    started_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "export_job"
