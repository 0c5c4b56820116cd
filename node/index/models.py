"""peewee models of the index: patient > study > series > instance.

Each level holds what C-FIND and QIDO-RS match on and return.  Text is
stored as Unicode (decoded with the data set's SpecificCharacterSet); the
``*_key`` columns hold a case-folded copy of person names so that PN
matching is case-insensitive for every script, not only ASCII.  Dates are
kept as DICOM ``YYYYMMDD`` strings and times as ``HHMMSS.FFFFFF``, so that
range matching is plain string comparison.
"""

from __future__ import annotations

import datetime as dt

import peewee

from .db import database


def utcnow() -> dt.datetime:
    """Now, in UTC, naive (as stored)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Patient(BaseModel):
    patient_id = peewee.TextField(unique=True)
    patient_name = peewee.TextField(default="")
    patient_name_key = peewee.TextField(default="", index=True)
    birth_date = peewee.TextField(default="")
    sex = peewee.TextField(default="")
    issuer_of_patient_id = peewee.TextField(default="")
    charset = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)


class Study(BaseModel):
    study_uid = peewee.TextField(unique=True)
    patient = peewee.ForeignKeyField(Patient, backref="studies", on_delete="CASCADE")
    study_date = peewee.TextField(default="", index=True)
    study_time = peewee.TextField(default="")
    accession_number = peewee.TextField(default="", index=True)
    study_id = peewee.TextField(default="")
    study_description = peewee.TextField(default="")
    referring_physician = peewee.TextField(default="")
    referring_physician_key = peewee.TextField(default="", index=True)
    institution_name = peewee.TextField(default="")
    charset = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    # Bumped whenever an instance of the study is added or replaced: caches
    # built from the study (ZIP archives) compare against it.
    updated_at = peewee.DateTimeField(default=utcnow)


class Series(BaseModel):
    series_uid = peewee.TextField(unique=True)
    study = peewee.ForeignKeyField(Study, backref="series", on_delete="CASCADE")
    modality = peewee.TextField(default="", index=True)
    series_number = peewee.IntegerField(null=True)
    series_description = peewee.TextField(default="")
    series_date = peewee.TextField(default="")
    series_time = peewee.TextField(default="")
    body_part_examined = peewee.TextField(default="")
    protocol_name = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        # Migration 0009: the study's series by modality (ModalitiesInStudy) from the index alone.
        indexes = ((("study", "modality"), False),)


class Instance(BaseModel):
    sop_uid = peewee.TextField(unique=True)
    series = peewee.ForeignKeyField(Series, backref="instances", on_delete="CASCADE")
    sop_class_uid = peewee.TextField(default="")
    instance_number = peewee.IntegerField(null=True)
    transfer_syntax = peewee.TextField(default="")
    rows = peewee.IntegerField(null=True)
    columns = peewee.IntegerField(null=True)
    number_of_frames = peewee.IntegerField(null=True)
    content_date = peewee.TextField(default="")
    content_time = peewee.TextField(default="")
    charset = peewee.TextField(default="")
    # Relative to [storage].path; built from validated UIDs only.
    path = peewee.TextField()
    size = peewee.BigIntegerField()
    received_at = peewee.DateTimeField(default=utcnow)
    calling_aet = peewee.TextField(default="")
    # Which door it came in by: dimse, stow, import, retrieve:<remote name>.
    source = peewee.TextField(default="")


class SchemaMigration(BaseModel):
    name = peewee.TextField(unique=True)
    applied_at = peewee.DateTimeField(default=utcnow)


LEVEL_MODELS = (Patient, Study, Series, Instance)
