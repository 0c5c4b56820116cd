"""peewee models of the index: patient > study > series > instance.

Each level holds what C-FIND and QIDO-RS match on and return: the attribute
columns come from the one catalogue (:mod:`node.index.catalog`); the columns
declared here are the index's own (links, character set, file, times).
Text is stored as Unicode (decoded with the data set's
SpecificCharacterSet); the ``*_key`` columns hold a case-folded copy of
person names so that PN matching is case-insensitive for every script, not
only ASCII.  Dates are kept as DICOM ``YYYYMMDD`` strings and times as
``HHMMSS.FFFFFF``, so that range matching is plain string comparison.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import peewee

from . import catalog
from .db import database


def utcnow() -> dt.datetime:
    """Now, in UTC, naive (as stored)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


def _catalogue(level: str) -> Callable[[type[BaseModel]], type[BaseModel]]:
    """Class decorator: add the catalogue's attribute columns of *level* to a model."""

    def decorate(model: type[BaseModel]) -> type[BaseModel]:
        for column in catalog.columns(level):
            if column.integer:
                field: peewee.Field = peewee.IntegerField(null=True, index=column.indexed)
            else:
                field = peewee.TextField(
                    default="", unique=column.attribute.unique and not column.folded, index=column.indexed
                )
            model._meta.add_field(column.name, field)
        return model

    return decorate


@_catalogue("PATIENT")
class Patient(BaseModel):
    charset = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)


@_catalogue("STUDY")
class Study(BaseModel):
    patient = peewee.ForeignKeyField(Patient, backref="studies", on_delete="CASCADE")
    charset = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    # Bumped whenever an instance of the study is added, replaced or moved in
    # or out: caches built from the study (ZIP archives) compare against it.
    updated_at = peewee.DateTimeField(default=utcnow)
    # The last read (WADO-RS, C-MOVE, C-GET, ZIP export), at most a minute late; NULL: never read.
    # Eviction (node/cache/eviction.py) goes by the later of this and updated_at.
    accessed_at = peewee.DateTimeField(null=True)


@_catalogue("SERIES")
class Series(BaseModel):
    study = peewee.ForeignKeyField(Study, backref="series", on_delete="CASCADE")
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        # Migration 0009: the study's series by modality (ModalitiesInStudy) from the index alone.
        indexes = ((("study", "modality"), False),)


@_catalogue("IMAGE")
class Instance(BaseModel):
    series = peewee.ForeignKeyField(Series, backref="instances", on_delete="CASCADE")
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
