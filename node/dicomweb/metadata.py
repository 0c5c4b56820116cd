"""PS3.18 Annex F DICOM JSON of a stored instance, bulk data replaced by BulkDataURI.

The header is parsed up to the pixel data with large values deferred, so
neither pixel data nor other bulk values are read: their presence and VR
come from the element headers alone.  pydicom's own ``to_json_dict`` would
load every deferred value, hence the small walker here.
"""

from __future__ import annotations

import logging
from typing import Any, BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from .pixels import read_header

log = logging.getLogger(__name__)

BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
# Binary values longer than this become BulkDataURIs (inline below, as Orthanc and dcm4chee do).
BULK_THRESHOLD = 1024


class BadTagPath(ValueError):
    """A bulk data path that does not name a bulk element of the instance."""


def instance_metadata(fp: BinaryIO, bulk_uri: str) -> dict[str, Any]:
    """The DICOM JSON of the instance in *fp*; bulk values point below *bulk_uri*."""
    with fp:
        ds, pixel = read_header(fp, defer_size=BULK_THRESHOLD)
    out = dataset_json(ds, bulk_uri)
    if pixel is not None:
        out[f"{pixel.tag:08X}"] = {"vr": pixel.vr, "BulkDataURI": f"{bulk_uri}/{pixel.tag:08X}"}
    return out


def dataset_json(ds: Dataset, bulk_uri: str) -> dict[str, Any]:
    """DICOM JSON of *ds* without loading deferred values; sequences recurse."""
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        key = f"{tag:08X}"
        uri = f"{bulk_uri}/{key}"
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            vr = raw.VR or _vr_of(tag)
            if vr in BULK_VRS:
                out[key] = {"vr": vr, "BulkDataURI": uri}
                continue
        try:
            elem = ds[tag]
            if elem.VR == "SQ":
                items = [dataset_json(item, f"{uri}/{i}") for i, item in enumerate(elem.value, 1)]
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            elif elem.VR in BULK_VRS and elem.value is not None and len(elem.value) > BULK_THRESHOLD:
                out[key] = {"vr": elem.VR, "BulkDataURI": uri}
            else:
                out[key] = elem.to_json_dict(None, BULK_THRESHOLD)
        except Exception as exc:  # one malformed value must not hide the rest of the header
            log.warning("metadata: skipping (%s) that cannot be encoded: %s", key, exc)
    return out


def _vr_of(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def parse_tag_path(path: str) -> list[int | tuple[int, int]]:
    """``"00540016/1/00181078"`` -> steps (sequence tag, item number) then the final tag."""
    pieces = [p for p in path.split("/") if p]
    if not pieces or len(pieces) % 2 == 0:
        raise BadTagPath(f"bulk data path {path!r}: expected TAG or SEQTAG/ITEM/.../TAG")
    try:
        tags = [Tag(p) for p in pieces[0::2]]
        items = [int(p) for p in pieces[1::2]]
    except (ValueError, OverflowError):
        raise BadTagPath(f"bulk data path {path!r}: tags are 8 hex digits, items numbers from 1") from None
    return [*zip(tags[:-1], items, strict=True), tags[-1]]


def bulk_value(fp: BinaryIO, path: str) -> bytes:
    """The raw value of the (non pixel data) bulk element at tag *path* of the instance in *fp*."""
    steps = parse_tag_path(path)
    with fp:
        ds, _ = read_header(fp)
    for seq_tag, item in steps[:-1]:  # type: ignore[misc]
        seq = ds.get(seq_tag)
        if seq is None or seq.VR != "SQ" or not 1 <= item <= len(seq.value):
            raise BadTagPath(f"bulk data path {path!r}: no item {item} of ({seq_tag:08X})")
        ds = seq.value[item - 1]
    elem = ds.get(steps[-1])
    if elem is None or elem.VR not in BULK_VRS or elem.value is None:
        raise BadTagPath(f"bulk data path {path!r}: no bulk data element there")
    return bytes(elem.value)
