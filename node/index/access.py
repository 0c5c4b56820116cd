"""When each study was last read: ``study.accessed_at``, for the eviction's least-recently-used order."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from .db import write_transaction
from .models import Study

_CHUNK = 500  # UIDs per IN (...) list


def record(study_uids: Sequence[str], at: dt.datetime) -> int:
    """Mark *study_uids* as read at *at* (never moving a later time back); return the rows changed."""
    changed = 0
    uids = list(dict.fromkeys(study_uids))
    with write_transaction():
        for start in range(0, len(uids), _CHUNK):
            chunk = uids[start : start + _CHUNK]
            changed += (
                Study.update(accessed_at=at)
                .where(Study.study_uid.in_(chunk) & (Study.accessed_at.is_null() | (Study.accessed_at < at)))
                .execute()
            )
    return changed
