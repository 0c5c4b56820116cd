"""Content negotiation for DICOMweb responses (PS3.18 8.7): what to send for an Accept header.

The node serves instances and frames exactly as stored (it never
transcodes), so negotiation is a question of whether the client's Accept
admits the stored transfer syntax.  A ``multipart/related`` range without a
``transfer-syntax`` parameter is taken as "as stored" (what dicomweb-client
and most viewers send when they mean "whatever you have").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.uid import UID

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
ZIP = "application/zip"
MULTIPART = "multipart/related"

# PS3.18 Table 8.7.3-5: media types of single frames per transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


class NotAcceptable(ValueError):
    """No media type in the Accept header can be served without transcoding."""


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def part_type(self) -> str:
        """For ``multipart/related``: the ``type`` parameter ("" when absent)."""
        return self.params.get("type", "").lower()

    @property
    def transfer_syntax(self) -> str:
        return self.params.get("transfer-syntax", "")

    def admits(self, syntax: str) -> bool:
        """Does this range accept data in transfer syntax *syntax* as it is?"""
        return self.transfer_syntax in ("", "*", syntax)


def _split(header: str, sep: str) -> list[str]:
    """Split on *sep* outside double quotes."""
    parts, current, quoted = [], [], False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first (by q, then by order); ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for position, item in enumerate(_split(header, ",")):
        pieces = _split(item, ";")
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append((-q, position, MediaRange(pieces[0].lower(), params, q)))
    return [r for _, _, r in sorted(ranges, key=lambda t: (t[0], t[1]))]


def _matches(media_type: str, wanted: str) -> bool:
    """Does range *media_type* (maybe with wildcards) cover *wanted*?"""
    if media_type in ("*/*", wanted):
        return True
    major, _, minor = media_type.partition("/")
    return minor == "*" and wanted.startswith(major + "/")


def _multipart_of(r: MediaRange, part: str) -> bool:
    """Is *r* a multipart/related range whose parts may be *part*? (``type`` absent: *part*.)"""
    return _matches(r.media_type, MULTIPART) and (r.part_type in ("", part) or _matches(r.part_type, part))


def choose_instances(accept: str | None, stored_syntaxes: Iterable[str]) -> str:
    """``"multipart"`` or ``"zip"`` for a retrieve of instances stored in *stored_syntaxes*.

    Raises NotAcceptable when no range admits every stored transfer syntax.
    """
    syntaxes = set(stored_syntaxes)
    ranges = parse_accept(accept)
    # Several multipart ranges may each admit some syntaxes (one per range).
    dicom_ranges = [r for r in ranges if _multipart_of(r, DICOM)]
    admitted = {s for s in syntaxes if any(r.admits(s) for r in dicom_ranges)}
    for r in ranges:
        if r.media_type == ZIP:
            return "zip"
        if _multipart_of(r, DICOM) and admitted == syntaxes:
            return "multipart"
    offered = ", ".join(sorted(syntaxes))
    raise NotAcceptable(
        f"cannot satisfy Accept {accept!r}: instances are served as stored ({offered}) as "
        f'multipart/related; type="{DICOM}" (transfer-syntax=* or the stored one) or {ZIP}'
    )


def frame_media_type(syntax: str) -> str:
    """The media type of one frame stored in *syntax* (octet-stream for native pixel data)."""
    return FRAME_MEDIA_TYPES.get(syntax, OCTET_STREAM)


def choose_frames(accept: str | None, syntax: str) -> str:
    """The part Content-Type for frames stored in *syntax*; raises NotAcceptable."""
    native = frame_media_type(syntax)
    for r in parse_accept(accept):
        # Native little-endian pixel bytes are the same in implicit and explicit VR.
        same_bytes = syntax in NATIVE_LITTLE_ENDIAN and r.transfer_syntax in NATIVE_LITTLE_ENDIAN
        if not (r.admits(syntax) or same_bytes):
            continue
        if _matches(r.media_type, MULTIPART) and r.part_type in ("", "*/*"):
            return f"{native}; transfer-syntax={syntax}"
        if _multipart_of(r, native) and r.part_type != "":
            return f"{native}; transfer-syntax={syntax}"
        # octet-stream asked with * or the stored syntax: the stored bytes, labelled as asked.
        if _multipart_of(r, OCTET_STREAM) and r.part_type != "":
            return f"{OCTET_STREAM}; transfer-syntax={syntax}"
    name = UID(syntax).name if syntax else "unknown"
    raise NotAcceptable(
        f"cannot satisfy Accept {accept!r}: frames are stored as {syntax} ({name}) and served as "
        f'multipart/related; type="{native}" or type="{OCTET_STREAM}" with transfer-syntax=* or {syntax}'
    )


def choose_json(accept: str | None) -> None:
    """Raise NotAcceptable unless the Accept header admits DICOM JSON."""
    for r in parse_accept(accept):
        if _matches(r.media_type, DICOM_JSON) or _matches(r.media_type, "application/json"):
            return
    raise NotAcceptable(f"cannot satisfy Accept {accept!r}: this resource is {DICOM_JSON}")
