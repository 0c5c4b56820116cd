"""A crash in an endpoint still gets a JSON 500 answer that passes through the node's middleware.

Starlette renders unhandled exceptions in its outermost layer, outside every
middleware of ours, so such an answer would carry no CORS headers (a browser
client then sees a CORS failure instead of the error).  This middleware sits
inside CORS and answers first; the exception is re-raised so that it is
logged with its traceback as before.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class InternalErrorAnswer:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception as exc:
            if not started:
                response = JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
                await response(scope, receive, send)
            raise
