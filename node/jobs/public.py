"""The public form of a job, the same for every kind (``GET /jobs``, ``GET /jobs/{id}``, the CLI)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..index.jobs import Job


def iso(value: dt.datetime | str | None, timespec: str = "auto") -> str | None:
    """A stored (naive UTC) time as ISO 8601 with ``Z``; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.isoformat(timespec=timespec) + "Z"


def job_json(job: Job, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """*job* as JSON: what every job has, and under ``details`` its kind's own fields.

    *details* defaults to the job's payload.
    """
    return {
        "id": job.id,
        "kind": job.kind,
        "key": job.key,
        "state": job.state,
        "phase": job.phase or None,
        "progress": {"done": job.done, "failed": job.failed, "total": job.total, "bytes": job.bytes},
        "message": job.message,
        "failure": job.failure or None,
        "attempts": job.attempts,
        "not_before": iso(job.not_before),
        "claimed_by": job.claimed_by,
        "lease_until": iso(job.lease_until),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "url": f"/jobs/{job.id}",
        "details": job.data if details is None else details,
    }
