"""``multipart/related`` response bodies, produced part by part in bounded chunks."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes per write step: memory stays bounded by about this much


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


@dataclass(frozen=True)
class FilePart:
    """One part read from a file: its Content-Type, its size as indexed, how to open it."""

    content_type: str
    size: int
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class GeneratedPart:
    """One part produced while it is sent (a transcoded instance): its length is not known beforehand."""

    content_type: str
    chunks: Callable[[], Iterable[bytes]]


def body_length(boundary: str, parts: Iterable[FilePart | GeneratedPart]) -> int | None:
    """The exact length of ``stream_files(boundary, parts)`` (sent as Content-Length), None if unknown."""
    total = len(closing(boundary))
    for part in parts:
        if isinstance(part, GeneratedPart):
            return None
        total += len(part_header(boundary, part.content_type, part.size)) + part.size + 2
    return total


def stream_files(
    boundary: str, parts: Iterable[FilePart | GeneratedPart], *, part_by_part: bool = False
) -> Iterator[bytes]:
    """A multipart body with one part per file, each opened only when its part is reached.

    A study of any size needs one chunk of memory.  The body length was
    announced from the index, so a file that cannot be opened or whose size
    changed since (replaced meanwhile) aborts the response: a truncated body
    is detectable, a silently wrong one is not.  A :class:`GeneratedPart` is
    sent as it is produced, without a Content-Length of its own; an error
    while producing it aborts the response the same way.  With
    *part_by_part*, each part goes out whole before the next is asked for
    (parts that arrive over time, e.g. a retrieval on a miss, are not held back).
    """
    pieces: list[bytes] = []
    held = 0
    pending = b""  # the previous part's CRLF, sent with the next header
    for part in parts:
        if isinstance(part, GeneratedPart):
            header, chunks = part_header(boundary, part.content_type), part.chunks()
        else:
            header, chunks = part_header(boundary, part.content_type, part.size), _file_chunks(part)
        pieces.append(pending + header)
        for data in chunks:
            pieces.append(data)
            held += len(data)
            # Small instances are gathered into one write of about CHUNK bytes: each
            # step costs a thread hop and an event-loop turn, whatever its size.
            if held >= CHUNK:
                yield b"".join(pieces)
                pieces, held = [], 0
        pending = b"\r\n"
        if part_by_part and pieces:
            yield b"".join(pieces)
            pieces, held = [], 0
    pieces.append(pending + closing(boundary))
    yield b"".join(pieces)


def stream_parts(boundary: str, parts: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """A multipart body of in-memory parts ``(content type, payload)``."""
    for part_type, payload in parts:
        yield part_header(boundary, part_type, len(payload))
        yield payload
        yield b"\r\n"
    yield closing(boundary)


def _file_chunks(part: FilePart) -> Iterator[bytes]:
    """The stored file of *part* in CHUNK pieces; OSError when it is not the size the index says."""
    try:
        fp = part.open()
        actual = os.fstat(fp.fileno()).st_size
        if actual != part.size:
            fp.close()
            raise OSError(f"{fp.name}: {actual} bytes on disk, {part.size} in the index")
    except OSError:
        log.exception("cannot read a stored instance during a retrieve; aborting the response")
        raise
    with fp:
        left = part.size
        while left:
            data = fp.read(min(CHUNK, left))
            if not data:
                raise OSError(f"{fp.name}: shorter than the {part.size} bytes indexed")
            yield data
            left -= len(data)
