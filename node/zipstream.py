"""The one ZIP writer: files on disk -> a ZIP archive, streamed in bounded memory.

An archive is produced as an iterator of ``bytes`` chunks (for a streaming
HTTP response) or written to a file object; both give identical bytes, and
neither needs to seek:

- deflated entries are followed by a data descriptor (general purpose flag
  bit 3), so nothing is patched afterwards;
- stored entries (level 0) carry their CRC and sizes in the local header
  (some streaming readers, e.g. Java's ZipInputStream, refuse stored entries
  with a data descriptor), at the cost of reading the file twice (the second
  read comes from the page cache);
- ZIP64 records are written for an entry of 4 GB or more, for offsets past
  4 GB and for 65,535 entries or more.

Compression uses every core: each entry is cut into 1 MiB chunks that worker
threads read (``os.pread``), checksum and deflate independently, each primed
with the 32 KiB before it as a dictionary and ended with a sync flush, as
pigz does; zlib releases the GIL, so the chunks compress in parallel and the
concatenated output is one valid deflate stream.  Only a bounded window of
chunks is in flight, so memory does not grow with the size of an entry or of
the archive (the central directory keeps ~100 bytes per entry).

Python's ``zipfile`` writes descriptors to unseekable streams, but compresses
on the calling thread only and would need a temp file per entry to put
stored entries' CRC ahead of their data; hence this small writer.

Deflate levels 2..9 use zlib-ng when installed (same format and level
meaning, about 1.5x faster than zlib at level 3 on CT images, with a slightly
smaller output); level 1 stays with zlib, whose level 1 packs far better than
zlib-ng's "quick" mode (34 % against 48 % of a CT study).
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

try:
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # no wheel for this platform: the standard library does it all
    _zlib_ng = zlib

_crc32 = _zlib_ng.crc32


def _deflate_module(level: int):
    """The zlib implementation for *level* (see the module docstring)."""
    return zlib if level == 1 else _zlib_ng


__all__ = ["Entry", "ZipStreamError", "iter_zip", "write_zip", "stored_size", "crc32_combine"]

CHUNK = 1 << 20  # bytes read, checksummed and compressed per task
WINDOW = 32 * 1024  # deflate dictionary size
_U32 = 0xFFFFFFFF
# An entry at least this large gets ZIP64 sizes.  Deflate may expand
# incompressible data by a few bytes per block, so deflated entries switch
# well below 4 GiB.  Module-level so that tests can exercise the ZIP64
# records with small files.
_ZIP64_STORED = _U32
_ZIP64_DEFLATED = 0xF0000000
_ZIP64_OFFSET = _U32  # offsets and central directory sizes
_ZIP64_COUNT = 0xFFFF  # entries; 0xFFFF in the end record means "see ZIP64"

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_FLAG_DESCRIPTOR = 0x08
_FLAG_UTF8 = 0x800
_STORED, _DEFLATED = 0, 8
_MADE_BY = (3 << 8) | 45  # Unix, spec 4.5
_EXTERNAL_ATTR = 0o100644 << 16


class ZipStreamError(OSError):
    """An entry could not be read as announced (e.g. the file shrank while zipping)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member: its name in the archive and the file holding its bytes.

    *size* is informational (e.g. for :func:`stored_size`); the writer uses
    the size of the file it opens.
    """

    name: str
    path: Path
    size: int | None = None


EntryLike = Entry | tuple[str, Path | str] | tuple[str, Path | str, int | None]


def _entry(item: EntryLike) -> Entry:
    if isinstance(item, Entry):
        return item
    return Entry(item[0], Path(item[1]), item[2] if len(item) > 2 else None)


def _name_bytes(name: str) -> tuple[bytes, int]:
    """The encoded member name and the UTF-8 flag; refuses names that could escape on extraction."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or "\x00" in name or ".." in parts or "" in parts:
        raise ValueError(f"unsafe ZIP member name: {name!r}")
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), _FLAG_UTF8


# -- CRC-32 combination (zlib's crc32_combine, which Python does not expose) --

_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (reflected bit order)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    p = 1 << 30  # x^1
    table = [p]
    for _ in range(31):
        p = _multmodp(p, p)
        table.append(p)
    return table


_X2N = _x2n_table()


def _x2nmodp(n: int, k: int) -> int:
    p = 1 << 31  # x^0
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A+B from crc32(A), crc32(B) and len(B)."""
    if len2 <= 0:
        return crc1
    return _multmodp(_x2nmodp(len2, 3), crc1) ^ crc2


# -- records --


def _dos_time(mtime: float) -> tuple[int, int]:
    t = time.localtime(mtime)
    if t.tm_year < 1980:
        return 0, (0 << 9) | (1 << 5) | 1
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), (
        ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    )


def _local_header(
    name: bytes, flags: int, method: int, dos: tuple[int, int], crc: int, size: int, zip64: bool
) -> bytes:
    descriptor = flags & _FLAG_DESCRIPTOR
    if zip64:
        extra = struct.pack("<HHQQ", 1, 16, 0 if descriptor else size, 0 if descriptor else size)
        csize = usize = _U32
    else:
        extra = b""
        csize = usize = 0 if descriptor else size
    version = 45 if zip64 else 20
    return (
        _LOCAL.pack(
            0x04034B50,
            version,
            flags,
            method,
            dos[0],
            dos[1],
            0 if descriptor else crc,
            csize,
            usize,
            len(name),
            len(extra),
        )
        + name
        + extra
    )


def _descriptor(crc: int, csize: int, usize: int, zip64: bool) -> bytes:
    if zip64:
        return struct.pack("<IIQQ", 0x08074B50, crc, csize, usize)
    return struct.pack("<IIII", 0x08074B50, crc, csize, usize)


@dataclass(slots=True)
class _Record:
    """What the central directory needs of one written entry."""

    name: bytes
    flags: int
    method: int
    dos: tuple[int, int]
    crc: int
    csize: int
    usize: int
    offset: int
    zip64: bool


def _central(r: _Record) -> bytes:
    values = []
    usize, csize, offset = r.usize, r.csize, r.offset
    if r.zip64 or usize >= _U32 or csize >= _U32:
        values += [usize, csize]
        usize = csize = _U32
    if offset >= _ZIP64_OFFSET:
        values.append(offset)
        offset = _U32
    extra = struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values) if values else b""
    version = 45 if extra else 20
    return (
        _CENTRAL.pack(
            0x02014B50,
            _MADE_BY,
            version,
            r.flags,
            r.method,
            r.dos[0],
            r.dos[1],
            r.crc,
            csize,
            usize,
            len(r.name),
            len(extra),
            0,
            0,
            0,
            _EXTERNAL_ATTR,
            offset,
        )
        + r.name
        + extra
    )


def _end_records(count: int, cd_offset: int, cd_size: int) -> bytes:
    out = b""
    if count >= _ZIP64_COUNT or cd_offset >= _ZIP64_OFFSET or cd_size >= _ZIP64_OFFSET:
        end64_offset = cd_offset + cd_size
        out += _END64.pack(0x06064B50, 44, _MADE_BY, 45, 0, 0, count, count, cd_size, cd_offset)
        out += _LOCATOR64.pack(0x07064B50, 0, end64_offset, 1)
        # Every field of the classic record that would be wrong says "see ZIP64".
        return out + _END.pack(0x06054B50, 0, 0, 0xFFFF, 0xFFFF, _U32, _U32, 0)
    return _END.pack(0x06054B50, 0, 0, count, count, cd_size, cd_offset, 0)


# -- work done by the pool --


def _read_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise ZipStreamError(f"file shrank while zipping (short read at offset {offset})")
        data += more
    return data


def _chunk_task(fd: int, offset: int, length: int, level: int, last: bool, keep: bool):
    """(crc32, bytes to write or None) for one chunk of an entry."""
    data = _read_exact(fd, length, offset)
    crc = _crc32(data)
    if level == 0:
        return crc, (data if keep else None)
    z = _deflate_module(level)
    if offset:
        start = max(0, offset - WINDOW)
        zdict = _read_exact(fd, offset - start, start)
        comp = z.compressobj(level, z.DEFLATED, -15, 8, z.Z_DEFAULT_STRATEGY, zdict)
    else:
        comp = z.compressobj(level, z.DEFLATED, -15)
    out = comp.compress(data) + comp.flush(z.Z_FINISH if last else z.Z_SYNC_FLUSH)
    return crc, out


@dataclass
class _Open:
    """An entry being written: its file descriptor and what is known so far."""

    name: bytes
    flags: int
    fd: int
    size: int
    dos: tuple[int, int]
    zip64: bool
    crc: int = 0
    csize: int = 0
    offset: int = 0
    kept: bytes | None = None


def _plan(entries: Iterable[EntryLike], level: int, chunk: int, opened: set[int]):
    """Yield ("start", e), ("chunk", e, offset, length, last), ("end", e) per entry, opening files lazily."""
    for item in entries:
        entry = _entry(item)
        name, flags = _name_bytes(entry.name)
        fd = os.open(entry.path, os.O_RDONLY)
        opened.add(fd)
        st = os.fstat(fd)
        size = st.st_size
        zip64 = size >= (_ZIP64_STORED if level == 0 else _ZIP64_DEFLATED)
        if level:
            flags |= _FLAG_DESCRIPTOR
        e = _Open(name, flags, fd, size, _dos_time(st.st_mtime), zip64)
        yield ("start", e)
        offset = 0
        while True:
            length = min(chunk, size - offset)
            last = offset + length >= size
            yield ("chunk", e, offset, length, last)
            offset += length
            if last:
                break
        yield ("end", e)


def iter_zip(
    entries: Iterable[EntryLike],
    level: int = 3,
    *,
    workers: int | None = None,
    chunk_size: int = CHUNK,
) -> Iterator[bytes]:
    """The ZIP archive of *entries* as a stream of bytes chunks.

    *entries* are :class:`Entry` or ``(archive name, path[, size])`` tuples
    and may be a lazy iterable; *level* 0 stores, 1..9 deflate.  Files are
    opened as they are reached; closing the iterator early releases them.
    """
    if not 0 <= level <= 9:
        raise ValueError(f"compression level must be 0..9, got {level}")
    if chunk_size < WINDOW:
        raise ValueError(f"chunk_size must be at least {WINDOW}")
    nworkers = workers or os.cpu_count() or 1
    method = _DEFLATED if level else _STORED
    opened: set[int] = set()
    plan = _plan(entries, level, chunk_size, opened)
    pool = ThreadPoolExecutor(max_workers=nworkers, thread_name_prefix="zipstream")
    pending: deque[tuple[tuple, Future | None]] = deque()
    in_flight = 0
    limit = 2 * nworkers + 2
    records: list[_Record] = []
    position = 0

    def fill() -> None:
        nonlocal in_flight
        while in_flight < limit:
            step = next(plan, None)
            if step is None:
                return
            future = None
            if step[0] == "chunk":
                _, e, offset, length, last = step
                keep = level == 0 and last and offset == 0
                future = pool.submit(_chunk_task, e.fd, offset, length, level, last, keep)
                in_flight += 1
            pending.append((step, future))

    try:
        fill()
        while pending:
            step, future = pending.popleft()
            e: _Open = step[1]
            out: list[bytes] = []
            if step[0] == "start":
                e.offset = position
                if level:
                    out.append(_local_header(e.name, e.flags, method, e.dos, 0, 0, e.zip64))
            elif step[0] == "chunk":
                crc, data = future.result()
                in_flight -= 1
                e.crc = crc32_combine(e.crc, crc, step[3]) if step[2] else crc
                if level:
                    e.csize += len(data)
                    out.append(data)
                else:
                    e.kept = data
            else:
                if level:
                    if not e.zip64 and e.csize >= _U32:
                        raise ZipStreamError(f"{e.name!r}: compressed size passed 4 GiB without ZIP64")
                    out.append(_descriptor(e.crc, e.csize, e.size, e.zip64))
                else:
                    e.csize = e.size
                    out.append(_local_header(e.name, e.flags, method, e.dos, e.crc, e.size, e.zip64))
                records.append(
                    _Record(e.name, e.flags, method, e.dos, e.crc, e.csize, e.size, e.offset, e.zip64)
                )
            fill()
            for piece in out:
                position += len(piece)
                yield piece
            if step[0] == "end" and not level:
                # Stored: the data follows its header, re-read (page cache) chunk by chunk.
                if e.kept is not None:
                    pieces: Iterable[bytes] = (e.kept,)
                else:
                    pieces = (
                        _read_exact(e.fd, min(chunk_size, e.size - o), o)
                        for o in range(0, e.size, chunk_size)
                    )
                for piece in pieces:
                    position += len(piece)
                    yield piece
                e.kept = None
            if step[0] == "end":
                os.close(e.fd)
                opened.discard(e.fd)
        cd_offset = position
        buffer = bytearray()
        for r in records:
            buffer += _central(r)
            if len(buffer) >= chunk_size:
                position += len(buffer)
                yield bytes(buffer)
                buffer.clear()
        cd_size = position + len(buffer) - cd_offset
        buffer += _end_records(len(records), cd_offset, cd_size)
        yield bytes(buffer)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        plan.close()
        for fd in opened:
            os.close(fd)


def write_zip(
    entries: Iterable[EntryLike],
    fileobj: BinaryIO,
    level: int = 3,
    *,
    workers: int | None = None,
    chunk_size: int = CHUNK,
) -> int:
    """Write the ZIP archive of *entries* to *fileobj* (need not be seekable); return its size."""
    total = 0
    for piece in iter_zip(entries, level, workers=workers, chunk_size=chunk_size):
        fileobj.write(piece)
        total += len(piece)
    return total


def stored_size(entries: Iterable[EntryLike]) -> int:
    """The exact size of ``iter_zip(entries, 0)`` (level 0), e.g. for a Content-Length.

    Sizes are taken from each entry's *size* when given, else from the file.
    """
    position = 0
    cd_size = 0
    count = 0
    for item in entries:
        entry = _entry(item)
        name, _ = _name_bytes(entry.name)
        size = entry.size if entry.size is not None else os.stat(entry.path).st_size
        zip64 = size >= _ZIP64_STORED
        offset = position
        position += _LOCAL.size + len(name) + (20 if zip64 else 0) + size
        n64 = (2 if (zip64 or size >= _U32) else 0) + (1 if offset >= _ZIP64_OFFSET else 0)
        cd_size += _CENTRAL.size + len(name) + (4 + 8 * n64 if n64 else 0)
        count += 1
    return position + cd_size + len(_end_records(count, position, cd_size))
