"""``dicom-node send REMOTE UID...``: queue a send job and, unless ``--no-wait``, see it through.

The command hosts a job worker of its own that may claim only its job, so
it sends whether or not a node is running; when a running node claims the
job first, the command just follows it.  Interrupted (Ctrl-C), the job goes
back to the queue for a running node to finish.
"""

from __future__ import annotations

import sys
import time

from ..context import NodeContext
from ..index import jobs, selection
from ..index.jobs import DONE, FINAL_STATES
from ..jobs.runner import JobRunner
from ..uids import valid_uid
from .send_job import KIND, MAX_ATTEMPTS, SendJobs, SendRequestError, queue_send

WATCH_S = 0.5


def _fail(message: str) -> int:
    print(f"dicom-node: {message}", file=sys.stderr)
    return 2


def send_command(ctx: NodeContext, remote: str, uids: list[str], *, wait: bool = True) -> int:
    """Queue the send of *uids* (any level) to *remote*; wait for it and print its progress."""
    bad = [u for u in uids if not valid_uid(u)]
    if bad:
        return _fail(f"not a valid UID: {', '.join(bad)}")
    wanted, unknown = selection.classify(uids)
    if unknown:
        return _fail(f"not held by this node: {', '.join(unknown)}")
    try:
        job = queue_send(None, ctx.settings, remote, wanted)
    except SendRequestError as exc:
        return _fail(str(exc))
    print(f"send job {job.id} queued: {job.total} instance(s) to {remote}")
    if not wait:
        print(f"a running node sends it (see GET /jobs/{job.id})")
        return 0
    runner = JobRunner(ctx.settings.jobs, only={job.id})
    runner.register(KIND, SendJobs(ctx), max_attempts=MAX_ATTEMPTS)
    runner.start()
    try:
        final = _follow(job.id)
    except KeyboardInterrupt:
        runner.stop()
        print(f"interrupted: send job {job.id} is queued again; a running node finishes it", file=sys.stderr)
        return 130
    runner.stop()
    if final.state == DONE:
        print(f"send job {final.id} done: {final.message}")
        return 0
    print(f"send job {final.id} {final.state}: {final.message}", file=sys.stderr)
    return 1


def _follow(job_id: int) -> jobs.Job:
    """Print the job's progress as it changes; return it once it has ended."""
    shown = None
    while True:
        job = jobs.get(job_id)
        if job is None:
            raise RuntimeError(f"send job {job_id} disappeared")
        if job.state in FINAL_STATES:
            return job
        line = f"{job.state}: {job.done}/{job.total} sent, {job.failed} refused, {job.bytes / 1e6:.1f} MB"
        if job.state == jobs.QUEUED and job.message:
            line += f" ({job.message})"
        if line != shown:
            print(line, flush=True)
            shown = line
        time.sleep(WATCH_S)
