"""CORS for ``[http].cors_origins``: which other sites' pages may call DICOMweb and the API.

Starlette's CORS middleware, placed outside the token check (a preflight
carries no Authorization header) and outside the error answer (so 401, 404,
500 and streamed answers all carry the headers).  The token itself is the
credential: cookies are never allowed cross-origin, so a page elsewhere can
use the node only with a token it was given.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from ..config import HttpSettings

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")
# Request headers a DICOMweb client sends beyond the CORS-safelisted ones.
REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept", "Content-Encoding", "Range")
# Answer headers a script may read: STOW/QIDO warnings, job locations, download names, paging.
EXPOSED_HEADERS = (
    "Content-Disposition",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Location",
    "Warning",
    "Allow",
)
MAX_AGE_S = 600


def middleware(http: HttpSettings) -> Middleware | None:
    """The CORS middleware for these settings, or None when no origin is configured."""
    if not http.cors_origins:
        return None
    return Middleware(
        CORSMiddleware,
        allow_origins=list(http.cors_origins),
        allow_methods=list(METHODS),
        allow_headers=list(REQUEST_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        allow_credentials=False,
        max_age=MAX_AGE_S,
    )
