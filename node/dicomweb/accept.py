"""Content negotiation for DICOMweb responses (PS3.18 8.7): what to send for an Accept header.

Instances and frames go out as stored whenever the Accept header admits the
stored transfer syntax; otherwise the node transcodes to the best syntax the
header names that it can produce (node.transcode.negotiate: lossless first,
a lossy syntax only when asked for exactly), and answers 406 only when no
acceptable range can be served at all (PS3.18 8.7.3.5).  A
``multipart/related`` range without a ``transfer-syntax`` parameter is taken
as "as stored" (what dicomweb-client and most viewers send when they mean
"whatever you have"), like ``transfer-syntax=*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.uid import UID

from ..transcode.negotiate import ANY, Action, Plan, plan
from ..transcode.syntaxes import LOSSLESS_TARGETS, LOSSY_TARGETS

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


def _syntax_of(r: MediaRange) -> str:
    """The syntax a range asks for; ``*`` for "as stored" (no parameter or ``*``)."""
    return r.transfer_syntax or ANY


@dataclass(frozen=True)
class InstanceChoice:
    """How to answer a retrieve of instances: the form, and the syntaxes the client takes (best first)."""

    form: str  # "multipart" or "zip"
    accepted: tuple[str, ...] = (ANY,)

    def plan(self, stored: str) -> Plan:
        """As stored, or the syntax to transcode an instance stored in *stored* to."""
        return plan(stored, self.accepted)


def choose_instances(accept: str | None, stored_syntaxes: Iterable[str]) -> InstanceChoice:
    """The form and syntaxes for a retrieve of instances stored in *stored_syntaxes*.

    Raises NotAcceptable when no acceptable range can serve every instance
    (as stored or transcoded).
    """
    syntaxes = set(stored_syntaxes)
    ranges = parse_accept(accept)
    # Several multipart ranges together say which syntaxes the client takes, best first.
    accepted = tuple(dict.fromkeys(_syntax_of(r) for r in ranges if _multipart_of(r, DICOM)))
    for r in ranges:
        if r.media_type == ZIP:
            return InstanceChoice("zip")
        if _multipart_of(r, DICOM) and all(plan(s, accepted).action is not Action.CANNOT for s in syntaxes):
            return InstanceChoice("multipart", accepted)
    offered = ", ".join(sorted(syntaxes))
    raise NotAcceptable(
        f"cannot satisfy Accept {accept!r}: the instances are stored as {offered} and served as stored, "
        f"transcoded to one of {', '.join(LOSSLESS_TARGETS)} (or, asked for exactly, "
        f'{", ".join(LOSSY_TARGETS)}) as multipart/related; type="{DICOM}", or as {ZIP}'
    )


def frame_media_type(syntax: str) -> str:
    """The media type of one frame stored in *syntax* (octet-stream for native pixel data)."""
    return FRAME_MEDIA_TYPES.get(syntax, OCTET_STREAM)


# PS3.18 Table 8.7.3-5: the syntax a bulk data media type means when the request names none.
DEFAULT_FRAME_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}
# Frames are pixel bytes: a deflated or big-endian "frame" is not something to produce.
_FRAME_TARGETS = set(LOSSLESS_TARGETS + LOSSY_TARGETS) - {"1.2.840.10008.1.2.1.99"}


@dataclass(frozen=True)
class FrameChoice:
    """Frames to send: the part media type, the syntax of their bytes, and whether that means converting."""

    media_type: str
    syntax: str
    transcode: bool = False

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.syntax}"


def _frame_choice(r: MediaRange, stored: str) -> FrameChoice | None:
    """What range *r* lets the node send for frames stored in *stored*, or None."""
    if not _matches(r.media_type, MULTIPART):
        return None
    part, wanted = r.part_type, r.transfer_syntax
    as_stored = wanted in ("", ANY, stored) or (
        stored in NATIVE_LITTLE_ENDIAN and wanted in NATIVE_LITTLE_ENDIAN
    )
    if part in ("", "*/*", "*") or part == OCTET_STREAM:
        label = OCTET_STREAM if part == OCTET_STREAM else None
        if as_stored:
            return FrameChoice(label or frame_media_type(stored), stored)
        if wanted in _FRAME_TARGETS and plan(stored, [wanted]).action is Action.TRANSCODE:
            return FrameChoice(label or frame_media_type(wanted), wanted, True)
        return None
    family = {s for s, media in FRAME_MEDIA_TYPES.items() if media == part}
    if not family:
        return None
    if wanted in ("", ANY) and stored in family:
        return FrameChoice(part, stored)
    target = DEFAULT_FRAME_SYNTAX.get(part, "") if wanted in ("", ANY) else wanted
    if target == stored and target in family:
        return FrameChoice(part, stored)
    if target in family and target in _FRAME_TARGETS and plan(stored, [target]).action is Action.TRANSCODE:
        return FrameChoice(part, target, True)
    return None


def choose_frames(accept: str | None, syntax: str) -> FrameChoice:
    """The frames to send for *accept* when they are stored in *syntax*; raises NotAcceptable."""
    for r in parse_accept(accept):
        choice = _frame_choice(r, syntax)
        if choice is not None:
            return choice
    name = UID(syntax).name if syntax else "unknown"
    raise NotAcceptable(
        f"cannot satisfy Accept {accept!r}: frames are stored as {syntax} ({name}) and served as "
        f'stored (multipart/related; type="{frame_media_type(syntax)}" or type="{OCTET_STREAM}" with '
        f"transfer-syntax=* or {syntax}) or transcoded to "
        f"{', '.join(sorted(_FRAME_TARGETS))}"
    )


def choose_json(accept: str | None) -> None:
    """Raise NotAcceptable unless the Accept header admits DICOM JSON."""
    for r in parse_accept(accept):
        if _matches(r.media_type, DICOM_JSON) or _matches(r.media_type, "application/json"):
            return
    raise NotAcceptable(f"cannot satisfy Accept {accept!r}: this resource is {DICOM_JSON}")
