"""The one catalogue of indexed attributes: column, level, VR, matching rule, QIDO default.

Every attribute the index holds, matches on or computes is one line here.
The models (:mod:`node.index.models`) take their attribute columns from it,
the ingest path (:mod:`node.ingest`) extracts exactly these attributes from
each header, the ingest statements (:mod:`node.index.ingest_rows`) write
them, the query engine (:mod:`node.index.query`) matches and returns them,
and QIDO-RS (:mod:`node.dicomweb.search`) answers its defaults from them.
Adding an attribute is one line here plus a migration adding its column.

Patient attributes are kept twice: on the patient row (the most recent
values, answered at the PATIENT level) and, for those with a
``study_column``, on each study row as that study's own instances hold them
(answered at the STUDY, SERIES and IMAGE levels: in Study Root, patient
attributes belong to the study).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# The table of each level.
TABLES = {"PATIENT": "patient", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}

# Matching rules (PS3.4 C.2.2.2), as the query engine applies them.
TEXT = "text"  # single value, wildcards, value lists
PN = "pn"  # as TEXT, case-insensitive on the case-folded *_key column
UID = "uid"  # UID list matching
DATE = "date"  # single date or range
TIME = "time"  # single time or range
INT = "int"  # one integer or a list of them
COUNT = "count"  # computed: a number of related entities (return key only)
LIST = "list"  # computed: the distinct values below (ModalitiesInStudy ...)
COMPUTED = (COUNT, LIST)

# VRs whose values are ASCII by definition: read without the character set.
_ASCII_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"}


@dataclass(frozen=True)
class Attribute:
    """One indexed (or computed) attribute."""

    keyword: str
    level: str  # the level whose entity it describes (one of LEVELS)
    match: str = TEXT
    column: str = ""  # column of the level's table; "" for computed keys
    unique: bool = False  # the level's unique key (PatientID, StudyInstanceUID, ...)
    indexed: bool = False  # the column has an index (matched often)
    qido: bool = False  # returned by QIDO-RS without includefield (PS3.18 Table 6.7.1-2)
    study_column: str = ""  # patient attributes: the study's own copy
    read_tag: int = 0  # read from this tag instead of the keyword's (file meta values)

    @property
    def tag(self) -> int:
        return _tag(self.keyword)

    @property
    def vr(self) -> str:
        return _vr(self.keyword)

    @property
    def computed(self) -> bool:
        return self.match in COMPUTED

    @property
    def key_column(self) -> str:
        """The case-folded copy a person name is matched on ("" unless PN)."""
        return f"{self.column}_key" if self.match == PN else ""

    @property
    def study_key_column(self) -> str:
        return f"{self.study_column}_key" if self.match == PN and self.study_column else ""

    @property
    def ascii(self) -> bool:
        """True when the value is ASCII by its VR (no character set needed to read it)."""
        return self.vr in _ASCII_VRS

    @property
    def source_tag(self) -> int:
        """The tag whose value the ingest path reads for this attribute."""
        return self.read_tag or self.tag


A = Attribute

ATTRIBUTES: tuple[Attribute, ...] = (
    # PATIENT
    A("PatientID", "PATIENT", TEXT, "patient_id", unique=True, qido=True),
    A("PatientName", "PATIENT", PN, "patient_name", indexed=True, qido=True, study_column="patient_name"),
    A("PatientBirthDate", "PATIENT", DATE, "birth_date", qido=True, study_column="patient_birth_date"),
    A("PatientSex", "PATIENT", TEXT, "sex", qido=True, study_column="patient_sex"),
    A("IssuerOfPatientID", "PATIENT", TEXT, "issuer_of_patient_id", study_column="issuer_of_patient_id"),
    A("OtherPatientIDs", "PATIENT", TEXT, "other_patient_ids", study_column="other_patient_ids"),
    A("NumberOfPatientRelatedStudies", "PATIENT", COUNT),
    A("NumberOfPatientRelatedSeries", "PATIENT", COUNT),
    A("NumberOfPatientRelatedInstances", "PATIENT", COUNT),
    # STUDY
    A("StudyInstanceUID", "STUDY", UID, "study_uid", unique=True, qido=True),
    A("StudyDate", "STUDY", DATE, "study_date", indexed=True, qido=True),
    A("StudyTime", "STUDY", TIME, "study_time", qido=True),
    A("AccessionNumber", "STUDY", TEXT, "accession_number", indexed=True, qido=True),
    A("StudyID", "STUDY", TEXT, "study_id", qido=True),
    A("StudyDescription", "STUDY", TEXT, "study_description", qido=True),
    A("ReferringPhysicianName", "STUDY", PN, "referring_physician", indexed=True, qido=True),
    A("InstitutionName", "STUDY", TEXT, "institution_name"),
    A("NumberOfStudyRelatedSeries", "STUDY", COUNT, qido=True),
    A("NumberOfStudyRelatedInstances", "STUDY", COUNT, qido=True),
    A("ModalitiesInStudy", "STUDY", LIST, qido=True),
    A("SOPClassesInStudy", "STUDY", LIST),
    # SERIES
    A("SeriesInstanceUID", "SERIES", UID, "series_uid", unique=True, qido=True),
    A("Modality", "SERIES", TEXT, "modality", indexed=True, qido=True),
    A("SeriesNumber", "SERIES", INT, "series_number", qido=True),
    A("SeriesDescription", "SERIES", TEXT, "series_description", qido=True),
    A("SeriesDate", "SERIES", DATE, "series_date"),
    A("SeriesTime", "SERIES", TIME, "series_time"),
    A("BodyPartExamined", "SERIES", TEXT, "body_part_examined"),
    A("ProtocolName", "SERIES", TEXT, "protocol_name"),
    A("NumberOfSeriesRelatedInstances", "SERIES", COUNT, qido=True),
    # IMAGE
    A("SOPInstanceUID", "IMAGE", UID, "sop_uid", unique=True, qido=True),
    A("SOPClassUID", "IMAGE", UID, "sop_class_uid", qido=True),
    A("InstanceNumber", "IMAGE", INT, "instance_number", qido=True),
    # The transfer syntax the instance is stored in: read from the file meta.
    A("AvailableTransferSyntaxUID", "IMAGE", UID, "transfer_syntax", read_tag=0x00020010),
    A("Rows", "IMAGE", INT, "rows", qido=True),
    A("Columns", "IMAGE", INT, "columns", qido=True),
    A("NumberOfFrames", "IMAGE", INT, "number_of_frames", qido=True),
    A("ContentDate", "IMAGE", DATE, "content_date"),
    A("ContentTime", "IMAGE", TIME, "content_time"),
)

BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in ATTRIBUTES}


@functools.cache
def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # a typo in the catalogue: fail at import, not at the first query
        raise KeyError(f"catalogue: {keyword!r} is not a DICOM keyword")
    return tag


@functools.cache
def _vr(keyword: str) -> str:
    return dictionary_VR(keyword)


def stored(level: str) -> tuple[Attribute, ...]:
    """Attributes with a column in *level*'s own table (its unique key first)."""
    own = [a for a in ATTRIBUTES if a.level == level and not a.computed]
    return tuple(sorted(own, key=lambda a: not a.unique))


def unique_key(level: str) -> Attribute:
    """The unique key of *level* (PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID)."""
    return next(a for a in ATTRIBUTES if a.level == level and a.unique)


def per_study() -> tuple[Attribute, ...]:
    """Patient attributes each study keeps its own copy of."""
    return tuple(a for a in ATTRIBUTES if a.study_column)


@dataclass(frozen=True)
class Column:
    """A column the catalogue puts in a table: its name, what fills it, its peewee kind."""

    name: str
    attribute: Attribute
    folded: bool = False  # the case-folded copy of a person name

    @property
    def integer(self) -> bool:
        return self.attribute.match == INT and not self.folded

    @property
    def indexed(self) -> bool:
        """Indexed in the database: a person name on its case-folded copy only."""
        attr = self.attribute
        return attr.indexed and (self.folded or attr.match != PN)


def columns(level: str) -> Iterator[Column]:
    """Every catalogue column of *level*'s table, unique key first, then in catalogue order.

    A person name brings its ``*_key`` column; the STUDY table also holds the
    per-study copies of the patient attributes.
    """
    for attr in stored(level):
        yield Column(attr.column, attr)
        if attr.key_column:
            yield Column(attr.key_column, attr, folded=True)
    if level == "STUDY":
        for attr in per_study():
            yield Column(attr.study_column, attr)
            if attr.study_key_column:
                yield Column(attr.study_key_column, attr, folded=True)


def qido_defaults(level: str) -> tuple[str, ...]:
    """The keywords QIDO-RS returns by default for *level*'s resource.

    Patient attributes are part of the study resource (PS3.18 Table 6.7.1-2).
    """
    home = ("PATIENT", "STUDY") if level == "STUDY" else (level,)
    return tuple(a.keyword for a in ATTRIBUTES if a.qido and a.level in home)
