"""C-FIND / C-MOVE / C-GET identifiers <-> the query engine's Query and matches.

Parsing: the request identifier (a pydicom Dataset decoded with its own
SpecificCharacterSet) becomes a :class:`~node.index.query.Query`.  Building:
each match becomes a response identifier carrying every requested element,
encoded in the request's character set when it can hold the values, else in
UTF-8 (ISO_IR 192), so that names in any script come back intact.
"""

from __future__ import annotations

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelGet,
    PatientStudyOnlyQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from ..index.query import LEVELS, Query, QueryError, level_of

# Information model (the engine's root) of each Q/R SOP class.
ROOTS = {
    PatientRootQueryRetrieveInformationModelFind: "PATIENT",
    PatientRootQueryRetrieveInformationModelMove: "PATIENT",
    PatientRootQueryRetrieveInformationModelGet: "PATIENT",
    StudyRootQueryRetrieveInformationModelFind: "STUDY",
    StudyRootQueryRetrieveInformationModelMove: "STUDY",
    StudyRootQueryRetrieveInformationModelGet: "STUDY",
    PatientStudyOnlyQueryRetrieveInformationModelFind: "PATIENT_STUDY_ONLY",
    PatientStudyOnlyQueryRetrieveInformationModelMove: "PATIENT_STUDY_ONLY",
    PatientStudyOnlyQueryRetrieveInformationModelGet: "PATIENT_STUDY_ONLY",
}
FIND_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
)
MOVE_MODELS = (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientStudyOnlyQueryRetrieveInformationModelMove,
)
GET_MODELS = (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    PatientStudyOnlyQueryRetrieveInformationModelGet,
)

# Elements that steer the query rather than match (never passed to the engine).
_CONTROL = {"QueryRetrieveLevel", "SpecificCharacterSet"}
UTF8 = "ISO_IR 192"


def root_of(sop_class_uid: str) -> str:
    """The information model of a Q/R SOP class (Study Root if unknown)."""
    return ROOTS.get(str(sop_class_uid), "STUDY")


def _text(elem: DataElement) -> str:
    value = elem.value
    if value is None or value == "":
        return ""
    if isinstance(value, bytes):
        raise QueryError(f"{elem.keyword or elem.tag}: a {elem.VR} value cannot be matched")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def to_query(identifier: Dataset, root: str, *, infer_level: bool = False) -> tuple[Query, list[DataElement]]:
    """The Query an identifier asks, and the elements each response must carry.

    Raises QueryError naming the problem (missing level, unknown key with a
    value, a value pydicom cannot decode, ...).  With *infer_level* (retrieves),
    a missing QueryRetrieveLevel is taken from the deepest key given a value,
    as Conquest and Orthanc do for ``movescu -k AccessionNumber=...``.
    """
    try:
        elements = list(identifier)  # decodes every element with the data set's charset
    except Exception as exc:  # pydicom raises many types on a broken identifier
        raise QueryError(f"the identifier cannot be decoded: {exc}") from None
    level = ""
    filters: dict[str, str] = {}
    wanted: list[DataElement] = []
    for elem in elements:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0:
            continue  # command / file meta / group lengths
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if keyword == "QueryRetrieveLevel":
            level = _text(elem).strip().upper()
            continue
        if keyword in _CONTROL:
            continue
        wanted.append(elem)
        if not keyword or elem.VR == "SQ":
            continue  # private or sequence keys: returned empty, never matched
        filters[keyword] = _text(elem)
    if not level and infer_level:
        level = _deepest_level(filters, root)
    if not level:
        raise QueryError("QueryRetrieveLevel (0008,0052) is missing or empty")
    return Query(level=level, filters=filters, root=root), wanted


def _deepest_level(filters: dict[str, str], root: str) -> str:
    levels = [level_of(k) for k, v in filters.items() if v.strip() not in ("", "*")]
    found = [lv for lv in LEVELS if lv in levels]
    if found:
        return found[-1]
    return "PATIENT" if root != "STUDY" else "STUDY"


def _codec(charset: object) -> str | None:
    """The Python codec of a single-valued SpecificCharacterSet, None for code extensions or ASCII.

    No character set (or ISO_IR 6) is the default repertoire, ASCII: pydicom
    maps it to Latin-1 for lenient decoding, which must not make a response
    claim it can hold "Müller" without saying so.
    """
    values = [v for v in (charset if isinstance(charset, MultiValue | list) else [charset]) if v]
    if len(values) > 1 or not values or str(values[0]).strip() in ("", "ISO_IR 6"):
        return None
    try:
        return convert_encodings(values or ["ISO_IR 6"])[0]
    except Exception:
        return None


def _texts(match: dict[str, object]):
    for value in match.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))


def response_charset(request_charset: object, match: dict[str, object]) -> str | list | None:
    """The SpecificCharacterSet of one response: the request's if it holds the values, else UTF-8.

    With no character set in the request the default repertoire (ASCII)
    holds only ASCII values; anything else is answered in ISO_IR 192, and
    the response then carries (0008,0005).
    """
    codec = _codec(request_charset)
    try:
        for text in _texts(match):
            if codec is None:
                text.encode("ascii")
            else:
                text.encode(codec)
    except UnicodeEncodeError:
        return UTF8
    return request_charset or None


def _element(elem: DataElement, value: object) -> DataElement:
    """A response element: the request's tag and VR, holding *value* (empty if none)."""
    vr = elem.VR
    if vr == "SQ":
        return DataElement(elem.tag, vr, Sequence())
    if value == "" or value is None or value == []:
        return DataElement(elem.tag, vr, None if vr in ("US", "SS", "UL", "SL", "FL", "FD") else "")
    if isinstance(value, int) and vr in ("IS", "DS", "UN", "LO", "SH", "CS"):
        value = str(value)
    return DataElement(elem.tag, vr, value)


def build_response(
    level: str,
    wanted: list[DataElement],
    match: dict[str, object],
    *,
    charset: object,
    constants: dict[str, str] | None = None,
) -> Dataset:
    """The identifier of one pending C-FIND response for *match*.

    Carries every requested element (filled from the match, or empty),
    the unique keys the engine added, QueryRetrieveLevel, and the character
    set chosen by :func:`response_charset`.  *constants* fill keys the node
    answers itself (RetrieveAETitle, InstanceAvailability).
    """
    constants = constants or {}
    ds = Dataset()
    chosen = response_charset(charset, match)
    if chosen:
        ds.SpecificCharacterSet = chosen
    ds.QueryRetrieveLevel = level
    seen = set()
    for elem in wanted:
        keyword = elem.keyword
        value = constants.get(keyword, match.get(keyword, "")) if keyword else ""
        ds.add(_element(elem, value))
        seen.add(keyword)
    for keyword, value in match.items():
        if keyword not in seen:
            tag_vr = dictionary_VR(keyword)
            ds.add(_element(DataElement(keyword, tag_vr, None), value))
    return ds
