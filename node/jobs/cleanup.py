"""What deleting a study does to the jobs about it (called by the delete action).

- The export of its accession: a job preparing the archive is cancelled and
  the archive file removed; the next request for the accession builds it
  again from what is left (or answers 404 when nothing is).
- A send job that names the study: cancelled while queued or running.  One
  that names only some of its series or instances finds them gone and says
  so when it ends.
- A job keyed by the study (the coming "retrieve" kind): cancelled.

Works from any process: a job running elsewhere sees its row cancelled at
its next lease renewal and stops.
"""

from __future__ import annotations

from ..config import Settings
from ..export import archive
from ..export.service import KIND as EXPORT
from ..index import jobs
from ..index.jobs import ACTIVE_STATES
from ..remotes.send_job import KIND as SEND
from .runner import JobRunner

RETRIEVE = "retrieve"


def forget_study(
    settings: Settings, study_uid: str, accession: str = "", runner: JobRunner | None = None
) -> list[int]:
    """Cancel the jobs working on a deleted study and drop its accession's archive; return the job ids."""
    message = f"study {study_uid} was deleted"
    touched: list[int] = []

    def cancel(job: jobs.Job | None) -> None:
        if job is None or job.state not in ACTIVE_STATES:
            return
        done = runner.cancel(job.id, message) if runner else jobs.cancel(job.id, message)
        if done:
            touched.append(job.id)

    if accession:
        export = jobs.find(EXPORT, accession)
        cancel(export)
        archive.archive_path(settings.export.path, accession).unlink(missing_ok=True)
        if export is not None and export.id not in touched:
            touched.append(export.id)
    cancel(jobs.find(RETRIEVE, study_uid))
    for job in jobs.of_kind(SEND, ACTIVE_STATES):
        if study_uid in job.data.get("studies", ()):
            cancel(job)
    return touched
