"""Jinja filters: DICOM values as people read them (dates, names, sizes, transfer syntaxes)."""

from __future__ import annotations

import datetime as dt
import functools

from pydicom.uid import UID

EMPTY = "—"


def dicom_date(value: object) -> str:
    """``20240105`` -> ``2024-01-05``."""
    text = str(value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or EMPTY


def dicom_time(value: object) -> str:
    """``101500.25`` -> ``10:15``."""
    text = str(value or "").strip().replace(":", "")
    if len(text) >= 4 and text[:4].isdigit():
        return f"{text[:2]}:{text[2:4]}"
    return text


def person_name(value: object) -> str:
    """``DOE^JOHN^^DR`` -> ``DOE, JOHN`` (the alphabetic group; the others when it is empty)."""
    text = str(value or "")
    groups = [g for g in text.split("=") if g.strip("^ ")]
    if not groups:
        return EMPTY
    parts = [p.strip() for p in groups[0].split("^")]
    family, given = (parts + ["", ""])[:2]
    middle = " ".join(p for p in parts[2:4] if p)
    rest = " ".join(p for p in (given, middle) if p)
    return f"{family}, {rest}" if family and rest else (family or rest)


def nbytes(value: object) -> str:
    """A byte count in binary units, three significant figures."""
    try:
        n = float(value or 0)
    except (TypeError, ValueError):
        return EMPTY
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


@functools.cache
def transfer_syntax(uid: str) -> str:
    """The name of a transfer syntax UID (the UID itself when pydicom does not know it)."""
    name = UID(uid).name if uid else ""
    return name if name and name != uid else (uid or EMPTY)


def count(value: object) -> str:
    """``12345`` -> ``12 345`` (thin space; reads well in any locale)."""
    try:
        return f"{int(value):,}".replace(",", "\u202f")
    except (TypeError, ValueError):
        return EMPTY


def when(value: object) -> str:
    """An ISO time (``...Z``) or a naive UTC datetime, as ``2024-01-05 10:15:02 UTC``."""
    if not value:
        return EMPTY
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).replace("Z", ""))
        except ValueError:
            return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: object) -> str:
    """``93784`` -> ``1 d 2 h``; ``125`` -> ``2 min``."""
    try:
        s = int(float(seconds or 0))
    except (TypeError, ValueError):
        return EMPTY
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{s} s"


FILTERS = {
    "dicom_date": dicom_date,
    "dicom_time": dicom_time,
    "person_name": person_name,
    "nbytes": nbytes,
    "transfer_syntax": transfer_syntax,
    "count": count,
    "when": when,
    "duration": duration,
}
