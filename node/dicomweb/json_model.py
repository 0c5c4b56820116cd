"""PS3.18 Annex F.2 DICOM JSON model -> pydicom Dataset.

Top-level ``BulkDataURI`` values are not loaded: they are returned as
references, so the instance builder can stream them from their spooled
part.  Bulk data inside sequences is small by nature and is loaded through
the *load_bulk* callback.  Empty attributes (``{"vr": "DA"}``) are legal
and become empty elements.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from ..statuses import METADATA_NOT_PARSEABLE

# dcm4chee's FailureReason for metadata that cannot be parsed.

_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")


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
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not all(isinstance(d, dict) for d in doc):
        raise MetadataError("JSON metadata must be an array of data set objects")
    return doc


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
    try:
        ds = Dataset.from_json(plain, bulk_data_uri_handler=lambda _tag, _vr, uri: load_bulk(uri))
    except MetadataError:
        raise
    except Exception as exc:  # pydicom raises many types on bad values
        raise MetadataError(f"JSON data set cannot be read: {exc}") from None
    return ds, refs
