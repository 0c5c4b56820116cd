"""Value validation the node does not need on every message (fast path).

- pydicom's per-value regex checks (reading and writing): every command
  set pynetdicom builds and every header value the node reads went through
  them (a warning at most) - a fifth of the CPU of a small C-STORE.  The
  node stores data as received and validates what it relies on itself.
- UID checks during association negotiation: pynetdicom validates every
  abstract and transfer syntax UID of an A-ASSOCIATE-RQ several times
  (``_config.VALIDATORS["UI"]`` and pydicom's ``UID.is_valid``, both a
  regular expression), ~4 ms of an association proposing storescu's 120
  contexts.  The same few hundred UIDs come back in every association, so
  both answers are cached (same results, computed once per distinct UID).
"""

from __future__ import annotations

import functools
import re

import pydicom.uid
from pydicom import config as pydicom_config
from pynetdicom import _config
from pynetdicom._validators import validate_ui

_DEFAULTS = (
    pydicom_config.settings.reading_validation_mode,
    pydicom_config.settings.writing_validation_mode,
)
_original_is_valid = pydicom.uid.UID.is_valid


@functools.lru_cache(maxsize=4096)
def _valid_uid(value: str) -> bool:
    return len(value) <= 64 and re.match(pydicom.uid.RE_VALID_UID, value) is not None


@functools.lru_cache(maxsize=4096)
def _validate_ui_cached(value: str) -> tuple[bool, str]:
    return validate_ui(pydicom.uid.UID(value))


def _validate_ui(value) -> tuple[bool, str]:
    if not isinstance(value, str):
        return validate_ui(value)
    return _validate_ui_cached(str(value))


def _is_valid(self) -> bool:
    return _valid_uid(str(self))


def install() -> None:
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    _config.VALIDATORS["UI"] = _validate_ui
    pydicom.uid.UID.is_valid = property(_is_valid)


def uninstall() -> None:
    (
        pydicom_config.settings.reading_validation_mode,
        pydicom_config.settings.writing_validation_mode,
    ) = _DEFAULTS
    _config.VALIDATORS["UI"] = validate_ui
    pydicom.uid.UID.is_valid = _original_is_valid


def installed() -> bool:
    return (
        pydicom_config.settings.reading_validation_mode == pydicom_config.IGNORE
        and _config.VALIDATORS["UI"] is _validate_ui
        and isinstance(pydicom.uid.UID.__dict__["is_valid"], property)
        and pydicom.uid.UID.__dict__["is_valid"].fget is _is_valid
    )
