"""node.zipstream: archives that Info-ZIP ``unzip -t`` and Python's zipfile both accept."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest

from node import zipstream
from node.zipstream import Entry, crc32_combine, iter_zip, stored_size, write_zip

UNZIP = shutil.which("unzip")


def _files(root: Path) -> list[tuple[str, Path]]:
    """A mix: empty, tiny, compressible, random, and multi-chunk files."""
    rnd = os.urandom
    contents = {
        "empty.bin": b"",
        "tiny.txt": b"x",
        "text.txt": b"hello DICOM " * 5000,
        "random.bin": rnd(300_000),
        "big-mixed.bin": (b"\x00" * 700_000 + rnd(900_000)) * 2,  # 3 chunks of 1 MiB and more
        "edge.bin": rnd(zipstream.CHUNK),  # exactly one chunk
    }
    entries = []
    for i, (name, data) in enumerate(contents.items()):
        path = root / name
        path.write_bytes(data)
        entries.append((f"ACC1/{i:02d}/{name}", path))
    return entries


def _check(archive: Path, entries: list[tuple[str, Path]]) -> None:
    if UNZIP:
        run = subprocess.run([UNZIP, "-t", str(archive)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "No errors detected" in run.stdout
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == [name for name, _ in entries]
        for name, path in entries:
            assert zf.read(name) == path.read_bytes(), name


@pytest.mark.parametrize("level", [0, 1, 3, 9])
def test_archive_round_trips_at_every_level(tmp_path: Path, level: int) -> None:
    entries = _files(tmp_path)
    archive = tmp_path / "out.zip"
    with archive.open("wb") as fh:
        size = write_zip(entries, fh, level)
    assert size == archive.stat().st_size
    _check(archive, entries)
    with zipfile.ZipFile(archive) as zf:
        methods = {info.compress_type for info in zf.infolist()}
    assert methods == ({zipfile.ZIP_STORED} if level == 0 else {zipfile.ZIP_DEFLATED})


def test_iterator_and_file_give_identical_bytes(tmp_path: Path) -> None:
    entries = _files(tmp_path)
    streamed = b"".join(iter_zip(entries, 3, workers=2))
    buf = io.BytesIO()
    write_zip([Entry(n, p) for n, p in entries], buf, 3, workers=1)
    assert streamed == buf.getvalue()


def test_stored_size_predicts_level_0_length(tmp_path: Path) -> None:
    entries = _files(tmp_path)
    assert stored_size(entries) == sum(len(c) for c in iter_zip(entries, 0))
    sized = [(n, p, p.stat().st_size) for n, p in entries]
    assert stored_size(sized) == stored_size(entries)


def test_stored_entries_carry_crc_in_local_header(tmp_path: Path) -> None:
    """Streaming readers (no central directory) can extract stored entries: no data descriptor."""
    entries = _files(tmp_path)
    data = b"".join(iter_zip(entries, 0))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            assert not info.flag_bits & 0x08
            local = data[info.header_offset : info.header_offset + 30]
            assert int.from_bytes(local[14:18], "little") == info.CRC


def test_deflated_output_is_smaller_for_compressible_data(tmp_path: Path) -> None:
    path = tmp_path / "zeros.bin"
    path.write_bytes(b"\x00" * 5_000_000)
    stored = b"".join(iter_zip([("a/zeros.bin", path)], 0))
    deflated = b"".join(iter_zip([("a/zeros.bin", path)], 3))
    assert len(deflated) < len(stored) // 100
    with zipfile.ZipFile(io.BytesIO(deflated)) as zf:
        assert zf.read("a/zeros.bin") == path.read_bytes()


def test_zip64_by_entry_count(tmp_path: Path, monkeypatch) -> None:
    """More entries than the end record counts (65,535) need the ZIP64 end records.

    The threshold is lowered so that a few hundred entries cross it (65,536
    real ones took 15-25 s of the suite); the records written are the same.
    """
    assert zipstream._ZIP64_COUNT == 0xFFFF
    monkeypatch.setattr(zipstream, "_ZIP64_COUNT", 300)
    path = tmp_path / "one.bin"
    path.write_bytes(b"z")
    count = 301
    entries = [(f"A/{i:05d}.dcm", path, 1) for i in range(count)]
    archive = tmp_path / "many.zip"
    with archive.open("wb") as fh:
        write_zip(entries, fh, 0, workers=2)
    data = archive.read_bytes()
    assert b"PK\x06\x06" in data[-200:]  # ZIP64 end of central directory record
    assert stored_size(entries) == len(data)
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert len(names) == count
        assert zf.read(names[-1]) == b"z"
    if UNZIP:
        run = subprocess.run([UNZIP, "-tqq", str(archive)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-500:] + run.stderr[-500:]


@pytest.mark.parametrize("level", [0, 3])
def test_zip64_entry_and_offset_records(tmp_path: Path, monkeypatch, level: int) -> None:
    """The ZIP64 size and offset fields, exercised by lowering the thresholds for small files."""
    monkeypatch.setattr(zipstream, "_ZIP64_STORED", 1000)
    monkeypatch.setattr(zipstream, "_ZIP64_DEFLATED", 1000)
    monkeypatch.setattr(zipstream, "_ZIP64_OFFSET", 5000)  # offsets past this get ZIP64 fields
    entries = _files(tmp_path)
    archive = tmp_path / "z64.zip"
    with archive.open("wb") as fh:
        write_zip(entries, fh, level)
    _check(archive, entries)
    if level == 0:
        assert stored_size(entries) == archive.stat().st_size
    with zipfile.ZipFile(archive) as zf:
        big = [i for i in zf.infolist() if i.file_size >= 1000]
        assert big and all(i.extract_version == 45 for i in big)


def test_crc32_combine_matches_zlib() -> None:
    a, b = os.urandom(12345), os.urandom(70001)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b""), 0) == zlib.crc32(a)


@pytest.mark.parametrize("name", ["../evil", "/abs", "a/../b", "a\\b", "", "a//b"])
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"1")
    with pytest.raises(ValueError, match="unsafe ZIP member name"):
        b"".join(iter_zip([(name, path)]))


def test_closing_early_releases_files(tmp_path: Path) -> None:
    entries = _files(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    stream = iter_zip(entries, 3)
    next(stream)
    next(stream)
    stream.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        b"".join(iter_zip([("a/b", tmp_path / "nope")]))
