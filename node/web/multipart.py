"""Streaming ``multipart/related`` parser: a request body spooled part by part to disk.

The body is fed in chunks as it arrives (:meth:`BodySpooler.feed`) and each
part's content is written to its own temp file in the store's temp folder,
so memory stays bounded whatever the body size.  ``Content-Encoding: gzip``
or ``deflate`` on the whole body is undone incrementally.  Limits on the
body size and the number of parts raise :class:`BodyError` with status 413;
a syntax error (no boundary, a truncated body, a missing closing delimiter,
oversized part headers) raises it with status 400; a full disk while
spooling, 507.  On any error every temp file made so far is removed at once.

Grammar: RFC 2046 5.1.1.  A delimiter is ``CRLF "--" boundary`` (the first
one may start the body), followed by optional linear white space and CRLF,
or by ``"--"`` for the closing delimiter.  Preamble and epilogue are ignored.
The boundary may be quoted in the Content-Type.  RFC 2046 allows 1-70
characters; longer ones are accepted up to :data:`MAX_BOUNDARY` (be liberal
in what you accept, with a bound): Orthanc's DICOMweb client, for one, sends
a 73-character boundary (two UUIDs).

No library is used: the PyPI streaming parsers found (multipart,
python-multipart, streaming-form-data) target ``multipart/form-data`` and
either insist on Content-Disposition or keep parts in memory.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..index.faults import is_full

MAX_HEADER_BYTES = 16 * 1024
# Longest boundary accepted (RFC 2046 says 70; real clients send more).
MAX_BOUNDARY = 200
# Bounds how much one compressed chunk may inflate to in one go (zip bombs).
_INFLATE_STEP = 1024 * 1024

# RFC 2046 bchars, plus the space that may not end a boundary.
_BOUNDARY_RE = re.compile(rf"^[0-9A-Za-z'()+_,\-./:=? ]{{0,{MAX_BOUNDARY - 1}}}[0-9A-Za-z'()+_,\-./:=?]$")
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(rf"\s*;\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^;\s\"]*))")


class BodyError(Exception):
    """The body cannot be accepted; *status* is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _spool_error(exc: OSError) -> BodyError:
    """A failure to write the spooled body: 507 when the disk is full."""
    cause = exc.strerror or str(exc)
    if is_full(exc):
        return BodyError(507, f"storage full: the body cannot be spooled ({cause}); nothing was stored")
    return BodyError(500, f"the body cannot be spooled: {cause}; nothing was stored")


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into its lower-cased media type and parameters.

    Parameter names are lower-cased; values keep their case, with quotes and
    backslash escapes of a quoted-string undone.
    """
    head, _, rest = value.partition(";")
    media_type = head.strip().lower()
    params: dict[str, str] = {}
    rest = ";" + rest if rest else ""
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m:
            break  # trailing garbage after the last good parameter: ignore it
        name = m.group(1).lower()
        if m.group(2) is not None:
            params[name] = re.sub(r"\\(.)", r"\1", m.group(2))
        else:
            params[name] = m.group(3)
        pos = m.end()
    return media_type, params


def valid_boundary(boundary: str) -> bool:
    """True for a boundary of RFC 2046 bchars, not ending in a space, of 1 to MAX_BOUNDARY characters."""
    return bool(_BOUNDARY_RE.match(boundary))


@dataclass
class Part:
    """One spooled body part: its headers (lower-cased names) and its content on disk."""

    index: int
    headers: dict[str, str]
    path: Path
    size: int = 0

    @property
    def content_type(self) -> str:
        """The part's media type (lower case, no parameters), "" when absent."""
        return parse_media_type(self.headers.get("content-type", ""))[0]

    @property
    def content_location(self) -> str:
        return self.headers.get("content-location", "").strip()

    @property
    def content_id(self) -> str:
        return self.headers.get("content-id", "").strip().strip("<>")


def _parse_headers(raw: bytes) -> dict[str, str]:
    """RFC 822 style header block (no final blank line) -> dict; folded lines joined."""
    headers: dict[str, str] = {}
    last = None
    for line in raw.decode("latin-1").split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and last:
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise BodyError(400, f"malformed part header line {line[:80]!r}")
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers


class _Inflater:
    """Incremental gzip/deflate decoding, never inflating more than a step at a time."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # 32+15: gzip or zlib header, auto-detected; raw deflate is tried on failure.
        self.obj = zlib.decompressobj(47 if encoding in ("gzip", "x-gzip") else 15)
        self.started = False

    def feed(self, data: bytes, sink: Callable[[bytes], None]) -> None:
        try:
            out = self.obj.decompress(data, _INFLATE_STEP)
        except zlib.error:
            if self.encoding == "deflate" and not self.started:
                # Some clients send raw deflate (RFC 1951) under "deflate".
                self.obj = zlib.decompressobj(-15)
                self.encoding = "raw"
                out = self._retry(data)
            else:
                raise BodyError(400, f"body is not valid {self.encoding} data") from None
        self.started = True
        while True:
            if out:
                sink(out)
            tail = self.obj.unconsumed_tail
            if not tail:
                break
            try:
                out = self.obj.decompress(tail, _INFLATE_STEP)
            except zlib.error:
                raise BodyError(400, f"body is not valid {self.encoding} data") from None

    def _retry(self, data: bytes) -> bytes:
        try:
            return self.obj.decompress(data, _INFLATE_STEP)
        except zlib.error:
            raise BodyError(400, "body is not valid deflate data") from None

    def finish(self) -> None:
        if not self.obj.eof:
            raise BodyError(400, f"truncated {self.encoding} body (the compressed stream does not end)")


_PREAMBLE, _HEADERS, _BODY, _AFTER_DELIM, _EPILOGUE = range(5)


@dataclass
class BodySpooler:
    """Feed a request body in chunks; get its parts as temp files.

    *boundary* None means the body is not multipart: it becomes one part
    with *single_headers*.  *new_temp* returns a fresh temp path (the
    store's :meth:`~node.store.InstanceStore.temp_path`).
    """

    new_temp: Callable[[], Path]
    boundary: str | None
    content_encoding: str = ""
    max_body_bytes: int = 8 * 1024**3
    max_parts: int = 10_000
    single_headers: dict[str, str] = field(default_factory=dict)
    # Called (in the feeding thread) with each part once its content is complete.
    on_part_done: Callable[[Part], None] | None = None

    def __post_init__(self) -> None:
        encoding = self.content_encoding.strip().lower()
        if encoding in ("", "identity"):
            self._inflater = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            self._inflater = _Inflater(encoding)
        else:
            raise BodyError(415, f"unsupported Content-Encoding {self.content_encoding!r} (gzip, deflate)")
        self.parts: list[Part] = []
        self.raw_bytes = 0
        self.body_bytes = 0
        self._buf = bytearray()
        self._file: BinaryIO | None = None
        self._done = False
        self._at_start = True
        if self.boundary is None:
            self._state = _BODY
            try:
                self._open_part(dict(self.single_headers))
            except OSError as exc:
                self.cleanup()
                raise _spool_error(exc) from None
        else:
            if not valid_boundary(self.boundary):
                raise BodyError(
                    400,
                    f"invalid multipart boundary {self.boundary[:MAX_BOUNDARY + 10]!r} ({len(self.boundary)} "
                    f"characters): 1-{MAX_BOUNDARY} of RFC 2046's characters, not ending in a space",
                )
            self._state = _PREAMBLE
            self._dash = b"--" + self.boundary.encode("latin-1")
            self._delim = b"\r\n" + self._dash

    # -- public ----------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Consume the next raw (possibly compressed) chunk of the body."""
        try:
            self.raw_bytes += len(chunk)
            if self.raw_bytes > self.max_body_bytes:
                raise BodyError(413, f"body larger than [http].max_body_bytes ({self.max_body_bytes} bytes)")
            if self._inflater is not None:
                self._inflater.feed(chunk, self._decoded)
            else:
                self._decoded(chunk)
        except OSError as exc:
            self.cleanup()
            raise _spool_error(exc) from None
        except BaseException:
            self.cleanup()
            raise

    def finish(self) -> list[Part]:
        """The body has ended: check it was complete and return the parts."""
        try:
            if self._inflater is not None:
                self._inflater.finish()
            if self.boundary is None:
                self._close_part()
            elif self._state == _PREAMBLE:
                raise BodyError(400, f"no multipart delimiter '--{self.boundary}' found in the body")
            elif self._state != _EPILOGUE:
                raise BodyError(
                    400,
                    f"truncated multipart body: part {len(self.parts)} is not followed by a "
                    f"delimiter and the closing '--{self.boundary}--' is missing",
                )
        except OSError as exc:
            self.cleanup()
            raise _spool_error(exc) from None
        except BaseException:
            self.cleanup()
            raise
        self._done = True
        return self.parts

    def cleanup(self) -> None:
        """Remove every temp file made (on error, or when the caller is done with them)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # its buffer could not be flushed (disk full): the file goes anyway
            self._file = None
        for part in self.parts:
            try:
                os.unlink(part.path)
            except FileNotFoundError:
                pass

    # -- parsing ---------------------------------------------------------------

    def _decoded(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.body_bytes > self.max_body_bytes:
            raise BodyError(413, f"body larger than [http].max_body_bytes ({self.max_body_bytes} bytes)")
        if self._state == _EPILOGUE:
            return
        if self.boundary is None:
            self._write(data)
            return
        self._buf += data
        self._parse()

    def _parse(self) -> None:
        buf = self._buf
        while True:
            if self._state == _BODY:
                idx = buf.find(self._delim)
                if idx < 0:
                    # Keep a tail that could be the start of a delimiter.
                    keep = len(self._delim) - 1
                    if len(buf) > keep:
                        cut = len(buf) - keep
                        self._write(memoryview(buf)[:cut])
                        del buf[:cut]
                    return
                if len(buf) < idx + len(self._delim) + 2:
                    # Need the two bytes after the delimiter to know what it is.
                    if idx:
                        self._write(memoryview(buf)[:idx])
                        del buf[:idx]
                    return
                after = buf[idx + len(self._delim) : idx + len(self._delim) + 2]
                if after != b"--" and after[:1] not in (b"\r", b" ", b"\t"):
                    # The boundary string is only a prefix of the body text here: data.
                    self._write(memoryview(buf)[: idx + 1])
                    del buf[: idx + 1]
                    continue
                self._write(memoryview(buf)[:idx])
                self._close_part()
                del buf[: idx + len(self._delim)]
                self._state = _AFTER_DELIM
            elif self._state == _PREAMBLE:
                if self._at_start:
                    # The first delimiter may open the body without a CRLF before it.
                    if len(buf) < len(self._dash) and self._dash.startswith(bytes(buf)):
                        return
                    self._at_start = False
                    if buf.startswith(self._dash):
                        del buf[: len(self._dash)]
                        self._state = _AFTER_DELIM
                        continue
                idx = buf.find(self._delim)
                if idx < 0:
                    keep = len(self._delim) - 1
                    if len(buf) > keep:
                        del buf[: len(buf) - keep]
                    return
                del buf[: idx + len(self._delim)]
                self._state = _AFTER_DELIM
            elif self._state == _AFTER_DELIM:
                if len(buf) < 2:
                    return
                if buf[:2] == b"--":
                    self._state = _EPILOGUE
                    buf.clear()
                    return
                eol = buf.find(b"\r\n")
                if eol < 0:
                    if len(buf) > 1024:
                        raise BodyError(400, "multipart delimiter not followed by CRLF")
                    return
                if buf[:eol].strip(b" \t"):
                    raise BodyError(400, "multipart delimiter followed by unexpected characters")
                del buf[: eol + 2]
                self._state = _HEADERS
            elif self._state == _HEADERS:
                if buf.startswith(b"\r\n"):
                    end, skip = 0, 2  # a part without headers
                else:
                    end = buf.find(b"\r\n\r\n")
                    skip = 4
                if end < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        raise BodyError(400, f"part headers longer than {MAX_HEADER_BYTES} bytes")
                    return
                if end > MAX_HEADER_BYTES:
                    raise BodyError(400, f"part headers longer than {MAX_HEADER_BYTES} bytes")
                headers = _parse_headers(bytes(buf[:end]))
                del buf[: end + skip]
                self._open_part(headers)
                self._state = _BODY
            else:  # _EPILOGUE
                buf.clear()
                return

    def _open_part(self, headers: dict[str, str]) -> None:
        if len(self.parts) >= self.max_parts:
            raise BodyError(413, f"more than [http].max_parts ({self.max_parts}) parts in the body")
        part = Part(index=len(self.parts) + 1, headers=headers, path=self.new_temp())
        self.parts.append(part)
        self._file = open(part.path, "wb")  # noqa: SIM115 - closed in _close_part/cleanup

    def _write(self, data: bytes | memoryview) -> None:
        if data:
            assert self._file is not None
            self._file.write(data)
            self.parts[-1].size += len(data)

    def _close_part(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            if self.on_part_done is not None:
                self.on_part_done(self.parts[-1])
