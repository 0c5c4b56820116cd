"""PS3.18 Annex F.2 DICOM JSON model -> pydicom Dataset.

Top-level ``BulkDataURI`` values are not loaded: they are returned as
references, so the instance builder can stream them from their spooled
part.  Bulk data inside sequences is small by nature and is loaded through
the *load_bulk* callback.  Empty attributes (``{"vr": "DA"}``) are legal
and become empty elements.

Hostile input is refused with a :class:`MetadataError` naming the problem
before pydicom sees it: JSON nested deeper than the parser allows, sequences
nested deeper than :data:`MAX_SEQUENCE_DEPTH`, keys that are not tags, VRs
that are not VRs (``"ZZ"``), ``Value`` that is not an array, items that are
not objects.  The walk is iterative, so no depth of input can exhaust the
stack here; the bound keeps pydicom's own (recursive) reading and writing
of the data set well inside Python's recursion limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.valuerep import VR

from ..integrity import MAX_DEPTH
from ..statuses import METADATA_NOT_PARSEABLE

_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
# Sequences nested deeper than this are refused (the stored file's walk has the same bound).
MAX_SEQUENCE_DEPTH = MAX_DEPTH
# The VRs of PS3.5 Table 6.2-1 (pydicom's ambiguous "US or SS" forms are not VRs on the wire).
VRS = frozenset(v.value for v in VR if " " not in v.value)


class MetadataError(ValueError):
    """Metadata cannot be turned into a data set; the message says why."""

    code = METADATA_NOT_PARSEABLE


@dataclass(frozen=True)
class BulkRef:
    """A top-level attribute whose value is in another part of the body."""

    tag: int
    vr: str
    uri: str


def load_json(path: Path, max_bytes: int) -> list[dict[str, Any]]:
    """The data sets of an ``application/dicom+json`` part (an array, or one object)."""
    size = path.stat().st_size
    if size > max_bytes:
        raise MetadataError(
            f"JSON metadata part of {size} bytes is larger than the {max_bytes} bytes allowed"
        )
    try:
        doc = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"metadata part is not valid JSON: {exc}") from None
    except RecursionError:
        raise MetadataError(
            f"JSON metadata nested too deeply to parse (sequences may nest {MAX_SEQUENCE_DEPTH} levels)"
        ) from None
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not all(isinstance(d, dict) for d in doc):
        raise MetadataError("JSON metadata must be an array of data set objects")
    for n, dataset in enumerate(doc, 1):
        check_model(dataset, f"data set {n}" if len(doc) > 1 else "")
    return doc


def check_model(obj: dict[str, Any], where: str = "") -> None:
    """Refuse a JSON-model data set pydicom could not read or write (see the module docstring)."""
    prefix = f"{where}: " if where else ""
    stack: list[tuple[dict[str, Any], int, str]] = [(obj, 0, "")]
    while stack:
        dataset, depth, path = stack.pop()
        for key, value in dataset.items():
            if not isinstance(key, str) or not _TAG_RE.match(key):
                raise MetadataError(f"{prefix}{path}not a DICOM JSON attribute: {str(key)[:40]!r}")
            name = f"{path}({key[:4].upper()},{key[4:].upper()})"
            if not isinstance(value, dict):
                raise MetadataError(f"{prefix}{name}: an attribute must be an object with a vr")
            vr = value.get("vr")
            if vr is not None and (not isinstance(vr, str) or vr not in VRS):
                raise MetadataError(f"{prefix}{name}: {str(vr)[:16]!r} is not a DICOM VR")
            values = value.get("Value")
            if values is not None and not isinstance(values, list):
                raise MetadataError(f"{prefix}{name}: Value must be an array")
            if vr == "SQ" and values:
                if depth + 1 > MAX_SEQUENCE_DEPTH:
                    raise MetadataError(f"{prefix}sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
                for n, item in enumerate(values, 1):
                    if item is None:
                        continue  # an empty item
                    if not isinstance(item, dict):
                        raise MetadataError(f"{prefix}{name} item {n}: an item must be an object")
                    stack.append((item, depth + 1, f"{name}[{n}]."))


def dataset_from_json(
    obj: dict[str, Any], load_bulk: Callable[[str], bytes]
) -> tuple[Dataset, list[BulkRef]]:
    """Build the data set of one JSON object; return it and its top-level bulk references."""
    plain: dict[str, Any] = {}
    refs: list[BulkRef] = []
    for key, value in obj.items():
        if not _TAG_RE.match(key) or not isinstance(value, dict):
            raise MetadataError(f"not a DICOM JSON attribute: {key!r}")
        tag = key.upper()
        if "BulkDataURI" in value:
            uri = value["BulkDataURI"]
            if not isinstance(uri, str) or not uri:
                raise MetadataError(f"({tag[:4]},{tag[4:]}): BulkDataURI must be a non-empty string")
            refs.append(BulkRef(int(tag, 16), str(value.get("vr") or "OB"), uri))
        else:
            plain[tag] = value
    check_model(plain)
    try:
        ds = Dataset.from_json(plain, bulk_data_uri_handler=lambda _tag, _vr, uri: load_bulk(uri))
    except MetadataError:
        raise
    except Exception as exc:  # pydicom raises many types on bad values (and warns on others)
        raise MetadataError(f"JSON data set cannot be read: {exc}") from None
    return ds, refs
