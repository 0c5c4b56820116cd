"""The streaming multipart/related parser on its own: grammar corners and chunk splits."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest

from node.web.multipart import BodyError, BodySpooler, parse_media_type, valid_boundary


def spool(tmp_path: Path, body: bytes, boundary: str | None = "b0undary", chunks=None, **kw):
    counter = itertools.count()
    spooler = BodySpooler(new_temp=lambda: tmp_path / f"{next(counter)}.part", boundary=boundary, **kw)
    if chunks is None:
        chunks = [body]
    for chunk in chunks:
        spooler.feed(chunk)
    parts = spooler.finish()
    return [(p.headers, p.path.read_bytes()) for p in parts], spooler


BODY = (
    b"preamble to ignore\r\n"
    b"--b0undary\r\nContent-Type: application/dicom\r\nContent-Location: one\r\n\r\n"
    b"first\r\n--b0undaryX is data, not a delimiter\r\n"
    b"\r\n--b0undary  \t\r\n\r\nno headers"
    b"\r\n--b0undary\r\nContent-Type: image/jpeg;\r\n  name=x\r\n\r\n\r\n--b0undar"
    b"\r\n--b0undary--\r\nepilogue --b0undary\r\n"
)
EXPECTED = [
    (
        {"content-type": "application/dicom", "content-location": "one"},
        b"first\r\n--b0undaryX is data, not a delimiter\r\n",
    ),
    ({}, b"no headers"),
    ({"content-type": "image/jpeg; name=x"}, b"\r\n--b0undar"),
]


def test_grammar_corners(tmp_path):
    parts, _ = spool(tmp_path, BODY)
    assert parts == EXPECTED


def test_every_split_point_gives_the_same_parts(tmp_path):
    for cut in range(1, len(BODY)):
        folder = tmp_path / str(cut)
        folder.mkdir()
        parts, _ = spool(folder, BODY, chunks=[BODY[:cut], BODY[cut:]])
        assert parts == EXPECTED, cut


def test_byte_by_byte_and_gzip(tmp_path):
    parts, _ = spool(tmp_path, BODY, chunks=[BODY[i : i + 1] for i in range(len(BODY))])
    assert parts == EXPECTED
    packed = gzip.compress(BODY)
    (tmp_path / "gz").mkdir()
    parts, _ = spool(
        tmp_path / "gz",
        packed,
        chunks=[packed[i : i + 7] for i in range(0, len(packed), 7)],
        content_encoding="gzip",
    )
    assert parts == EXPECTED


def test_body_may_start_with_the_delimiter_without_crlf(tmp_path):
    parts, _ = spool(tmp_path, b"--b0undary\r\n\r\nx\r\n--b0undary--")
    assert parts == [({}, b"x")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"no delimiter at all", "no multipart delimiter"),
        (b"--b0undary\r\n\r\npart without end", "truncated"),
        (b"--b0undary\r\nContent-Type: x\r\n", "truncated"),
        (b"--b0undary\r\n\r\nx\r\n--b0undary\r\n\r\ny\r\n--b0undary", "truncated"),
        (b"--b0undary junk\r\n\r\n", "unexpected characters"),
        (b"--b0undary\r\nno colon here\r\n\r\nx\r\n--b0undary--", "malformed part header"),
    ],
)
def test_syntax_errors_are_400_and_leave_no_files(tmp_path, body, message):
    with pytest.raises(BodyError) as err:
        spool(tmp_path, body)
    assert err.value.status == 400
    assert message in err.value.message
    assert list(tmp_path.iterdir()) == []


def test_limits_are_413(tmp_path):
    with pytest.raises(BodyError) as err:
        spool(tmp_path, BODY, max_parts=2)
    assert err.value.status == 413
    with pytest.raises(BodyError) as err:
        spool(tmp_path, BODY, max_body_bytes=100)
    assert err.value.status == 413
    bomb = gzip.compress(b"\0" * 10_000_000)
    with pytest.raises(BodyError) as err:
        spool(tmp_path, bomb, max_body_bytes=1_000_000, content_encoding="gzip")
    assert err.value.status == 413
    assert list(tmp_path.iterdir()) == []


def test_single_part_body(tmp_path):
    parts, _ = spool(
        tmp_path, b"whole body", boundary=None, single_headers={"content-type": "application/dicom"}
    )
    assert parts == [({"content-type": "application/dicom"}, b"whole body")]


def test_unknown_content_encoding_is_415(tmp_path):
    with pytest.raises(BodyError) as err:
        spool(tmp_path, BODY, content_encoding="br")
    assert err.value.status == 415


def test_parse_media_type():
    assert parse_media_type('Multipart/Related; Type="application/dicom+xml"; boundary="a b\\"c"') == (
        "multipart/related",
        {"type": "application/dicom+xml", "boundary": 'a b"c'},
    )
    assert parse_media_type("multipart/related;type=application/dicom;boundary=--=_x:y") == (
        "multipart/related",
        {"type": "application/dicom", "boundary": "--=_x:y"},
    )
    assert parse_media_type("") == ("", {})


def test_valid_boundary():
    assert valid_boundary("a" * 70)
    assert valid_boundary("a" * 73)  # Orthanc's DICOMweb client: two UUIDs
    assert valid_boundary("a" * 200)
    assert not valid_boundary("a" * 201)
    assert not valid_boundary("ends with space ")
    assert not valid_boundary("")
    assert not valid_boundary("bad\x00char")
