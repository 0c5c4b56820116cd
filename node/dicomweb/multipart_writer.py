"""``multipart/related`` response bodies, produced part by part in bounded chunks."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes read from a file per step: memory stays bounded by this


def new_boundary() -> str:
    """A boundary that cannot occur in DICOM data by accident."""
    return f"dicomnode-{secrets.token_hex(16)}"


def content_type(part_type: str, boundary: str) -> str:
    """The Content-Type of the whole response."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_header(boundary: str, content_type: str, length: int | None = None, location: str = "") -> bytes:
    """The delimiter and headers that open one part."""
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if location:
        lines.append(f"Content-Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def stream_files(
    boundary: str,
    items: Iterable[tuple[str, Callable[[], BinaryIO]]],
) -> Iterator[bytes]:
    """A multipart body with one part per ``(content type, opener)``, read lazily.

    Each file is opened only when its part is reached, so a study of any
    size needs one chunk of memory.  A file that cannot be opened once the
    response has begun aborts the body (the status line is already sent):
    a truncated multipart is detectable, a silently missing instance is not.
    """
    pending = b""  # the previous part's CRLF, sent with the next header (fewer, larger writes)
    for part_type, opener in items:
        try:
            fp = opener()
        except OSError:
            log.exception("cannot read a stored instance during a retrieve; aborting the response")
            raise
        head = pending + part_header(boundary, part_type)
        with fp:
            # The first chunk travels with the part header: a small instance is one write.
            yield head + fp.read(CHUNK)
            while data := fp.read(CHUNK):
                yield data
        pending = b"\r\n"
    yield pending + closing(boundary)


def stream_parts(boundary: str, parts: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """A multipart body of in-memory parts ``(content type, payload)``."""
    for part_type, payload in parts:
        yield part_header(boundary, part_type, len(payload))
        yield payload
        yield b"\r\n"
    yield closing(boundary)
