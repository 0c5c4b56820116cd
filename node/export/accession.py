"""Accession numbers from requests: validation and the safe names built from them.

An accession number is a DICOM SH value (PS3.5 6.2): at most 16 characters
of the default repertoire, no backslash, no control characters; leading and
trailing spaces are not significant.  The node also refuses ``/`` (a path
separator in the pipelines it replaces), ``*`` and ``?`` (C-FIND wildcards:
``CN*`` would retrieve every study of a PACS) and values made only of dots.
No path is ever built from the raw value: :func:`file_stem` encodes it.
"""

from __future__ import annotations

import re
from pathlib import Path

MAX_LENGTH = 16
_SAFE = re.compile(r"[A-Za-z0-9_-]")


class InvalidAccession(ValueError):
    """The accession number is not acceptable; the message says why."""


def validate(raw: str | None) -> str:
    """The accession number in *raw* (surrounding spaces removed), or InvalidAccession."""
    if raw is None:
        raise InvalidAccession("missing accession number (AccessionNumber)")
    value = raw.strip(" ")
    if not value:
        raise InvalidAccession("empty accession number")
    if len(value) > MAX_LENGTH:
        raise InvalidAccession(
            f"accession number longer than {MAX_LENGTH} characters (DICOM SH): {len(value)} characters"
        )
    for char in value:
        if char == "\\":
            raise InvalidAccession("accession number contains a backslash (not allowed in DICOM SH)")
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise InvalidAccession(
                f"accession number contains a control character (U+{ord(char):04X}), not allowed in DICOM SH"
            )
        if ord(char) > 0x7E:
            raise InvalidAccession(f"accession number contains a non-ASCII character {char!r}")
        if char in "/*?":
            raise InvalidAccession(f"accession number contains {char!r}, which this node does not accept")
    if set(value) == {"."}:
        raise InvalidAccession(f"accession number {value!r} is not acceptable")
    return value


def file_stem(accession: str) -> str:
    """A file-name-safe, reversible encoding of a validated accession number.

    Letters, digits, ``_`` and ``-`` stay as they are (so ``CN1234`` gives
    ``CN1234``); every other character becomes ``%XX``.
    """
    return "".join(c if _SAFE.fullmatch(c) else f"%{ord(c):02X}" for c in accession)


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing any result that is not directly inside *folder*."""
    root = folder.resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise InvalidAccession(f"file name {name!r} would leave {root}")
    return path
