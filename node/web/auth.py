"""Access control with ``[http].token``: the bearer header for clients, a session cookie for the console.

- API clients send ``Authorization: Bearer <token>``, as before.
- A browser logs in once at ``/console/login`` with the token and gets a
  session cookie (HttpOnly, SameSite=Strict): an expiry signed with the
  token (HMAC), so no session table exists, every worker process can check
  it, and changing the token ends every session.
- State-changing requests made with the cookie (anything but GET / HEAD)
  must carry ``X-CSRF-Token`` (derived from the cookie, put in the console's
  pages) and, when the browser sends ``Origin``, come from this host.  A
  page elsewhere can neither read the token nor send that header without a
  CORS preflight this node does not grant for cookies.
- Open without either: ``GET /health``, the login page, the console's
  static files, the viewer's files (``/viewer/*.js``, ``.css``, ``.wasm``,
  ``manifest.json``...: published code, no patient data, and some of them
  browsers fetch without cookies), and every ``OPTIONS`` (preflights carry
  no credentials).  The viewer's pages (``/viewer/``, its routes) and
  everything it reads from ``/dicom-web`` need the session.
- A browser asking for a console or viewer page without a session is sent
  to the login page; everything else gets 401 JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from http.cookies import SimpleCookie
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = {"/health", "/console/login"}
OPEN_PREFIXES = ("/console/static/",)
# Pages a browser navigates to: without a session they redirect to the login form.
PAGE_PREFIXES = ("/console/", "/viewer")
LOGIN_PATH = "/console/login"
VIEWER_FILES = "/viewer/"

COOKIE = "dicom_node_session"
CSRF_HEADER = "x-csrf-token"
SESSION_S = 12 * 3600
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _sign(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    """A session cookie value: its expiry and the token's signature of it."""
    expires = int((now or time.time()) + SESSION_S)
    return f"{expires}.{_sign(token, f'session:{expires}')}"


def valid_session(token: str, value: str, now: float | None = None) -> bool:
    expires, _, signature = value.partition(".")
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    return hmac.compare_digest(signature, _sign(token, f"session:{expires}"))


def csrf_token(token: str, session: str) -> str:
    """The value a cookie-authenticated state-changing request must send in ``X-CSRF-Token``."""
    return _sign(token, f"csrf:{session}")[:40]


def session_of(cookie_header: str) -> str:
    cookie = SimpleCookie()
    try:
        cookie.load(cookie_header)
    except Exception:  # noqa: BLE001 - a malformed Cookie header is no session
        return ""
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel else ""


def request_csrf(request: Request, token: str) -> str:
    """The CSRF token for the session of *request* ("" without a token or a session)."""
    if not token:
        return ""
    session = request.cookies.get(COOKIE, "")
    return csrf_token(token, session) if session else ""


def set_session(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        new_session(token),
        max_age=SESSION_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _is_open(path: str) -> bool:
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return True
    return path.startswith(VIEWER_FILES) and "." in path.rsplit("/", 1)[-1]


def _is_page(path: str) -> bool:
    return path == "/" or path.startswith(PAGE_PREFIXES)


def _same_origin(origin: str, host: str) -> bool:
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


class TokenAuth:
    """Pure ASGI middleware (no body buffering, so streaming routes stay streaming)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if method == "OPTIONS" or _is_open(path):
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope["headers"]}
        given = headers.get(b"authorization")
        if given is not None:
            if hmac.compare_digest(given, self.expected):
                await self.app(scope, receive, send)
                return
            await self._refuse(scope, receive, send, "wrong bearer token")
            return
        session = session_of(headers.get(b"cookie", b"").decode("latin-1"))
        if session and valid_session(self.token, session):
            problem = None if method in SAFE_METHODS else self._csrf_problem(headers, session)
            if problem is None:
                await self.app(scope, receive, send)
                return
            response = JSONResponse({"error": problem}, status_code=403)
            await response(scope, receive, send)
            return
        if method in ("GET", "HEAD") and _is_page(path):
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            response = RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)
            await response(scope, receive, send)
            return
        reason = "session expired: log in again" if session else "missing bearer token"
        await self._refuse(scope, receive, send, reason)

    def _csrf_problem(self, headers: dict[bytes, bytes], session: str) -> str | None:
        sent = headers.get(CSRF_HEADER.encode(), b"").decode("latin-1")
        if not hmac.compare_digest(sent, csrf_token(self.token, session)):
            return (
                f"missing or wrong {CSRF_HEADER} header"
                " (the console sends it; API clients use the bearer token)"
            )
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and not _same_origin(origin, headers.get(b"host", b"").decode("latin-1")):
            return f"cross-origin request from {origin} refused for a cookie session"
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, reason: str) -> None:
        response = JSONResponse(
            {"error": f"{reason} (Authorization: Bearer <token>, or log in at {LOGIN_PATH})"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)
