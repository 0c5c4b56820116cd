"""One log line per HTTP request: client, method, path, status, bytes, time, and what it did.

Endpoints say what they did with :func:`note` (``5 stored, 1 failed``,
``404 unknown study``); the line is written once the response has been sent,
streamed bodies included, so its size and duration are the real ones.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import observe_request

log = logging.getLogger("node.http")


def note(request: Request, text: str) -> None:
    """Add *text* to the request's log line."""
    previous = getattr(request.state, "log_note", "")
    request.state.log_note = f"{previous}; {text}" if previous else text


class RequestLog:
    """Pure ASGI middleware (streams pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except BaseException:
            status = status or 500
            raise
        finally:
            elapsed = time.monotonic() - started
            observe_request(scope, elapsed)
            client = scope.get("client") or ("?", 0)
            query = scope.get("query_string", b"").decode("latin-1")
            path = scope["path"] + (f"?{query}" if query else "")
            detail = scope.get("state", {}).get("log_note", "")
            log.info(
                "%s %s %s -> %d, %d bytes in %.1f ms%s",
                client[0],
                scope["method"],
                path,
                status,
                sent,
                elapsed * 1000,
                f": {detail}" if detail else "",
            )
