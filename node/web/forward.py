"""``POST /forward/{scu}/{scp}/studies``: the STOW-RS-to-C-STORE gateway (opendicom POSTCSTORE).

The body is any STOW-RS body the node accepts; it goes through the STOW-RS
receiving code (node/web/stow.py) into the ingest path, so the instances
are kept here.  The stored ones are then C-STOREd to the remote whose AE
title is ``{scp}``, calling as ``{scu}``, over one association.  The answer
is the STOW-RS response body; its status tells what that remote accepted:
200 all, 202 some (FailedSOPSequence carries the remote's status per
instance as FailureReason), 409 none.  A remote that cannot be reached is
502 with a JSON message naming it; an unknown ``{scp}`` is 404; an ``{scu}``
that is not a valid AE title is 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import Remote, valid_ae_title
from ..context import NodeContext
from ..index.models import Instance
from ..ingest import Source, Status
from ..remotes.forwarder import is_accepted
from ..remotes.sender import NoAcceptedContext, Peer, SendError, Sent, outgoing, send_batch
from ..statuses import PROCESSING_FAILURE, SOP_CLASS_NOT_SUPPORTED
from .access_log import note
from .stow import InstanceResult, StowError, base_url, error_response, receive, stow_response


@dataclass
class Relay:
    """What the remote made of the stored instances."""

    accepted: list[InstanceResult]
    refused: list[InstanceResult]


def _relay(ctx: NodeContext, remote: Remote, scu: str, stored: Sequence[InstanceResult]) -> Relay:
    """C-STORE *stored* to *remote* over one association; raise SendError if it cannot be opened."""
    by_uid: dict[str, InstanceResult] = {}
    for r in stored:
        by_uid[r.outcome.sop_instance_uid] = r  # the same instance twice in a body goes once
    rows = Instance.select().where(Instance.sop_uid.in_(list(by_uid)))
    items = [outgoing(ctx.store, row) for row in rows]
    try:
        sent = send_batch(Peer(remote.ae_title, remote.host, remote.port), scu, items)
    except NoAcceptedContext as exc:
        # Reachable, but it takes none of these SOP classes: every instance refused.
        return Relay(
            [], [_refused(r, remote, None, (SOP_CLASS_NOT_SUPPORTED, str(exc))) for r in by_uid.values()]
        )
    answered = {s.item.sop_uid: s for s in sent}
    if items and not any(s.status is not None for s in sent) and not any(_no_context(s) for s in sent):
        # The association opened but broke before a single answer.
        raise SendError(f"{remote.ae_title}@{remote.host}:{remote.port} closed the association")
    relay = Relay([], [])
    for uid, result in by_uid.items():
        s = answered.get(uid)
        if s is not None and is_accepted(s):
            warnings = (s.status,) if s.status else ()
            relay.accepted.append(replace(result, warnings=result.warnings + warnings))
        else:
            relay.refused.append(_refused(result, remote, s))
    return relay


def _no_context(s: Sent) -> bool:
    """Not sent because the remote took no presentation context for it (sender's wording)."""
    return s.status is None and ("accepted no context" in s.error or "does not accept" in s.error)


def _refused(
    result: InstanceResult, remote: Remote, s: Sent | None, given: tuple[int, str] | None = None
) -> InstanceResult:
    if given is not None:
        code, why = given
    elif s is None:
        code, why = PROCESSING_FAILURE, "not sent: the association ended before this instance"
    elif s.status is None:
        code = SOP_CLASS_NOT_SUPPORTED if _no_context(s) else PROCESSING_FAILURE
        why = s.error
    else:
        code, why = s.status, f"status 0x{s.status:04X}" + (f" ({s.error})" if s.error else "")
    outcome = replace(
        result.outcome,
        status=Status.FAILED,
        failure_code=code,
        reason=f"kept here, but {remote.ae_title} refused it: {why}",
    )
    return replace(result, outcome=outcome)


async def forward_studies(request: Request) -> Response:
    """POST /forward/{scu}/{scp}/studies."""
    ctx: NodeContext = request.app.state.ctx
    scu, scp = request.path_params["scu"], request.path_params["scp"]
    if not valid_ae_title(scu):
        return JSONResponse(
            {"error": f"calling AE title {scu[:64]!r} is not valid (1-16 characters, no backslash)"},
            status_code=400,
        )
    remote = ctx.settings.remote_by_ae(scp)
    if remote is None:
        known = ", ".join(r.ae_title for r in ctx.settings.remotes) or "none configured"
        return JSONResponse(
            {"error": f"no remote with AE title {scp[:64]!r} (known: {known})"}, status_code=404
        )
    try:
        # Tagged with the remote: store-and-forward does not send these to it a second time.
        result = await receive(request, None, source=Source("gateway", calling_aet=scu, remote=remote.name))
    except StowError as exc:
        note(request, exc.message)
        return error_response(exc)
    stored = result.stored
    if not stored:
        return stow_response(result, base_url(request))
    try:
        relay = await run_in_threadpool(_relay, ctx, remote, scu.strip(), stored)
    except SendError as exc:
        note(request, f"{len(stored)} instance(s) kept here, not sent: {exc}")
        return JSONResponse(
            {
                "error": f"remote {remote.name} ({remote.ae_title}@{remote.host}:{remote.port}) "
                f"could not be reached: {exc}",
                "remote": remote.name,
                "stored": len(stored),
            },
            status_code=502,
        )
    accepted = {r.outcome.sop_instance_uid: r for r in relay.accepted}
    result.instances = [accepted.get(r.outcome.sop_instance_uid, r) if r.ok else r for r in result.instances]
    note(
        request,
        f"{len(stored)} stored here, {len(relay.accepted)} accepted and {len(relay.refused)} "
        f"refused by {remote.ae_title}",
    )
    return stow_response(result, base_url(request), extra_failures=relay.refused)


routes = [Route("/forward/{scu}/{scp}/studies", forward_studies, methods=["POST"])]
