"""PS3.19 Native DICOM Model (``application/dicom+xml``) -> the PS3.18 JSON model.

The XML is converted to the JSON model and then built by
:mod:`node.dicomweb.json_model`, so both media types share one data set
builder and one bulk-data path (``<BulkData uri=...>`` becomes a
``BulkDataURI``).  ElementTree (expat) resolves no external entities, and
expat bounds entity expansion.  The document is parsed incrementally and
refused as soon as it nests deeper than sequences may
(:data:`~node.dicomweb.json_model.MAX_SEQUENCE_DEPTH`), so a 100,000-deep
document costs neither the memory of its tree nor the stack of converting it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from .json_model import MAX_SEQUENCE_DEPTH, MetadataError

# Binary numbers become JSON numbers; IS/DS keep their text (exactly as sent).
_NUMBER_VRS = {"US", "UL", "SS", "SL", "UV", "SV", "FL", "FD"}
_PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
# Element depth: NativeDicomModel, then DicomAttribute / Item per sequence level,
# and under an attribute at most PersonName / Alphabetic / FamilyName.
MAX_XML_DEPTH = 2 * MAX_SEQUENCE_DEPTH + 6


def _local(tag: str) -> str:
    """An element name without its namespace."""
    return tag.rsplit("}", 1)[-1]


def load_xml(path: Path, max_bytes: int) -> dict[str, Any]:
    """The JSON-model data set of one NativeDicomModel part."""
    size = path.stat().st_size
    if size > max_bytes:
        raise MetadataError(f"XML metadata part of {size} bytes is larger than the {max_bytes} bytes allowed")
    try:
        root = _parse(path)
    except ET.ParseError as exc:
        raise MetadataError(f"metadata part is not well-formed XML: {exc}") from None
    if _local(root.tag) != "NativeDicomModel":
        raise MetadataError(f"XML metadata root is <{_local(root.tag)}>, expected <NativeDicomModel>")
    return _attributes(root)


def _parse(path: Path) -> ET.Element:
    """The document's root, refusing it the moment it nests deeper than MAX_XML_DEPTH."""
    depth = 0
    root: ET.Element | None = None
    for event, element in ET.iterparse(path, events=("start", "end")):
        if event == "start":
            depth += 1
            if root is None:
                root = element
            if depth > MAX_XML_DEPTH:
                raise MetadataError(
                    f"XML metadata nested deeper than {MAX_XML_DEPTH} elements "
                    f"(sequences may nest {MAX_SEQUENCE_DEPTH} levels)"
                )
        else:
            depth -= 1
    if root is None:  # pragma: no cover - iterparse raises on an empty document
        raise MetadataError("XML metadata part is empty")
    return root


def _attributes(parent: ET.Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in parent:
        if _local(attr.tag) != "DicomAttribute":
            continue
        tag = _tag_of(attr)
        vr = attr.get("vr") or _default_vr(tag)
        out[f"{tag:08X}"] = _attribute(attr, vr, tag)
    return out


def _tag_of(attr: ET.Element) -> int:
    raw = attr.get("tag")
    if raw:
        try:
            return int(raw, 16)
        except ValueError:
            raise MetadataError(f"DicomAttribute tag {raw!r} is not 8 hex digits") from None
    keyword = attr.get("keyword") or ""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise MetadataError(f"DicomAttribute without tag and unknown keyword {keyword!r}")
    return tag


def _default_vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def _numbered(attr: ET.Element, name: str) -> list[ET.Element]:
    items = [c for c in attr if _local(c.tag) == name]
    try:
        return sorted(items, key=lambda c: int(c.get("number") or 0))
    except ValueError:
        raise MetadataError(f"<{name}> with a non-numeric number attribute") from None


def _attribute(attr: ET.Element, vr: str, tag: int) -> dict[str, Any]:
    where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    value: dict[str, Any] = {"vr": vr}
    for child in attr:
        name = _local(child.tag)
        if name == "BulkData":
            uri = child.get("uri") or child.get("uuid")
            if not uri:
                raise MetadataError(f"{where}: <BulkData> without a uri")
            value["BulkDataURI"] = uri
            return value
        if name == "InlineBinary":
            value["InlineBinary"] = "".join((child.text or "").split())
            return value
    if vr == "SQ":
        items = _numbered(attr, "Item")
        if items:
            value["Value"] = [_attributes(item) for item in items]
        return value
    if vr == "PN":
        names = _numbered(attr, "PersonName")
        if names:
            value["Value"] = [_person_name(pn) for pn in names]
        return value
    values = _numbered(attr, "Value")
    if values:
        value["Value"] = [_scalar(v.text or "", vr, where) for v in values]
    return value


def _scalar(text: str, vr: str, where: str) -> Any:
    if vr not in _NUMBER_VRS:
        return text
    text = text.strip()
    if not text:
        return None
    try:
        return float(text) if vr in ("FL", "FD") else int(text)
    except ValueError:
        raise MetadataError(f"{where}: {text[:40]!r} is not a valid {vr} value") from None


def _person_name(pn: ET.Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for group in pn:
        name = _local(group.tag)
        if name not in ("Alphabetic", "Ideographic", "Phonetic"):
            continue
        parts = {_local(c.tag): (c.text or "") for c in group}
        out[name] = "^".join(parts.get(p, "") for p in _PN_PARTS).rstrip("^")
    return out
