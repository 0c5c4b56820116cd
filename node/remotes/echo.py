"""C-ECHO a configured remote: is it up, does it take our association, how long does it answer.

The failure is named the way an operator fixes it: ``unreachable``
(nothing listens there, or no route), ``timeout`` (no answer in time),
``refused`` (the remote rejected the association, with the reason it gave:
usually our AE title is not known to it), ``aborted`` (it dropped the
association) or ``status`` (it answered the C-ECHO with a failure).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from ..config import Remote
from ..statuses import SUCCESS, status_text

DEFAULT_TIMEOUT_S = 10.0

UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
REFUSED = "refused"
ABORTED = "aborted"
STATUS = "status"


@dataclass(frozen=True)
class EchoResult:
    """The outcome of one C-ECHO (times in milliseconds)."""

    remote: Remote
    calling_ae: str
    ok: bool
    total_ms: float  # connect, associate, echo, release
    round_trip_ms: float | None = None  # C-ECHO-RQ sent to C-ECHO-RSP received
    status: int | None = None
    failure: str = ""  # one of the names above; "" when ok
    message: str = ""

    @property
    def peer(self) -> str:
        r = self.remote
        return f"{r.ae_title}@{r.host}:{r.port}"

    def as_json(self) -> dict:
        """The body of ``POST /remotes/{name}/echo``."""
        body = {
            "remote": self.remote.name,
            "ae_title": self.remote.ae_title,
            "host": self.remote.host,
            "port": self.remote.port,
            "calling_ae_title": self.calling_ae,
            "ok": self.ok,
            "status": self.status,
            "round_trip_ms": _ms(self.round_trip_ms),
            "total_ms": _ms(self.total_ms),
        }
        if not self.ok:
            body.update(failure=self.failure, error=self.message)
        return body

    def __str__(self) -> str:
        where = f"{self.remote.name} ({self.peer})"
        if self.ok:
            return (
                f"{where}: C-ECHO ok in {self.round_trip_ms:.1f} ms "
                f"({self.total_ms:.1f} ms with the association)"
            )
        return f"{where}: {self.failure}: {self.message}"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def echo(remote: Remote, calling_ae: str, timeout: float = DEFAULT_TIMEOUT_S) -> EchoResult:
    """Associate with *remote* as *calling_ae*, send one C-ECHO, release.

    Never raises for the remote's faults: the result names them.
    """
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    started = time.monotonic()

    def result(ok: bool, **kwargs) -> EchoResult:
        total = (time.monotonic() - started) * 1000
        return EchoResult(remote, calling_ae, ok, total, **kwargs)

    # pynetdicom sometimes reports a rejection as an abort (the peer closes the
    # connection right after its A-ASSOCIATE-RJ): keep the PDU when it arrives.
    # (By the PDU's class name: its module is pynetdicom's internals, which only node/dimse/wire imports.)
    rejections: list = []

    def on_pdu(event) -> None:
        if type(event.pdu).__name__ == "A_ASSOCIATE_RJ":
            rejections.append(event.pdu)

    assoc = ae.associate(
        remote.host, remote.port, ae_title=remote.ae_title, evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)]
    )
    if assoc.is_established:
        sent = time.monotonic()
        rsp = assoc.send_c_echo()
        round_trip = (time.monotonic() - sent) * 1000
        status = getattr(rsp, "Status", None)
        if assoc.is_established:
            assoc.release()
        if status is None:
            return result(False, failure=TIMEOUT, message=f"no C-ECHO response within {timeout:g}s")
        if int(status) != SUCCESS:
            comment = str(getattr(rsp, "ErrorComment", "") or "")
            return result(
                False,
                status=int(status),
                failure=STATUS,
                message=f"answered the C-ECHO with {status_text(int(status))}"
                + (f": {comment}" if comment else ""),
            )
        return result(True, status=SUCCESS, round_trip_ms=round_trip)
    if assoc.is_rejected or rejections:
        rsp = rejections[0] if rejections else assoc.acceptor.primitive
        return result(
            False,
            failure=REFUSED,
            message=f"rejected the association from {calling_ae}: {rsp.reason_str} "
            f"({rsp.result_str.lower()}, by the {rsp.source_str.lower()}); "
            f"is {calling_ae} known to it, and is {remote.ae_title} its AE title?",
        )
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        return result(False, failure=REFUSED, message="does not accept the Verification SOP class (C-ECHO)")
    failure, message = _diagnose(remote, timeout, time.monotonic() - started)
    return result(False, failure=failure, message=message)


def _diagnose(remote: Remote, timeout: float, elapsed: float) -> tuple[str, str]:
    """Why no association came about: probe the TCP connection by itself.

    pynetdicom reports every such failure alike; a plain connect tells a
    closed port from a silent host from a peer that hung up.
    """
    where = f"{remote.host}:{remote.port}"
    try:
        with socket.create_connection((remote.host, remote.port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        return UNREACHABLE, f"connection refused: nothing listens on {where}"
    except TimeoutError:
        return TIMEOUT, f"no answer to a TCP connection to {where} within {timeout:g}s (host down?)"
    except OSError as exc:
        return UNREACHABLE, f"cannot connect to {where}: {exc.strerror or exc}"
    if elapsed >= timeout * 0.9:
        return TIMEOUT, (
            f"accepted the TCP connection but did not answer the association request within {timeout:g}s"
        )
    return ABORTED, "accepted the TCP connection, then closed it without accepting the association"
