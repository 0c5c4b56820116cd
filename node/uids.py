"""DICOM UID helpers: validation before a UID goes near a path, and new UIDs."""

from __future__ import annotations

import re
import uuid

# PS3.5 9.1: components of digits separated by dots, no leading zero in a
# multi-digit component, at most 64 characters.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def valid_uid(value: object) -> bool:
    """True when *value* is a syntactically valid UID (safe to use in a file name)."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID_RE.match(value))


def new_uid() -> str:
    """A new UID in the 2.25 (UUID-derived) form of PS3.5 B.2."""
    return f"2.25.{uuid.uuid4().int}"


# Identifies this software in association negotiation and in the file meta of
# every Part-10 file it writes (PS3.7 D.3.3.2, PS3.10 7.1). A fixed UID of the
# 2.25 form, generated once for this project.
IMPLEMENTATION_CLASS_UID = "2.25.271947127343460934573337263542385498305"
IMPLEMENTATION_VERSION_NAME = "DICOM_NODE_01"
