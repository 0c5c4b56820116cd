"""STOW-RS bodies built to crash a parser: a named 400/409 each, never a 500; long boundaries.

Also a real client that sends a 73-character boundary: Orthanc's DICOMweb
client (``/dicom-web/servers/{name}/stow``).
"""

from __future__ import annotations

import json

import httpx
import pytest
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from tests.harness import Orthanc, RunningNode, node_config, orthanc_available
from tests.test_stow import content_type, dicom_parts, failed_items, multipart, post, referenced_items


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> RunningNode:
    root = tmp_path_factory.mktemp("hostile")
    n = RunningNode(root, node_config(root)).start()
    yield n
    n.stop()


def _sq(depth: int, leaf: str = "{}") -> str:
    """A data set with *depth* sequences nested one in the other's single item."""
    return '{"00081115":{"vr":"SQ","Value":[' * depth + leaf + "]}}" * depth


_ATTRS = '"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.7"]}'
JSON_BODIES = {
    "100,000-deep nesting": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "10,000 nested SQ items": (_sq(10_000), "nested too deeply"),
    "100 nested SQ items": (_sq(100), "nested deeper than 64"),
    "VR ZZ": ('{"00100010":{"vr":"ZZ","Value":["X"]},' + _ATTRS + "}", "'ZZ' is not a DICOM VR"),
    "VR ZZ inside a sequence": (_sq(3, '{"00100010":{"vr":"ZZ"}}'), "'ZZ' is not a DICOM VR"),
    "Value not an array": ('{"00100010":{"vr":"PN","Value":"X"},' + _ATTRS + "}", "Value must be an array"),
    "item not an object": ('{"00081115":{"vr":"SQ","Value":[7]}}', "an item must be an object"),
    "key not a tag": ('{"PatientName":{"vr":"PN"}}', "not a DICOM JSON attribute"),
    "attribute not an object": ('{"00100010":"X"}', "must be an object"),
    "US value not a number": ('{"00280010":{"vr":"US","Value":["many"]},' + _ATTRS + "}", "part 1"),
    "array of strings": ('["a", "b"]', "array of data set objects"),
    "not UTF-8": (b'{"00100010":{"vr":"PN","Value":[{"Alphabetic":"\xff"}]}}', "not valid JSON"),
}


def _xml_sq(depth: int) -> str:
    return (
        '<?xml version="1.0"?><NativeDicomModel>'
        + '<DicomAttribute tag="00081115" vr="SQ"><Item number="1">' * depth
        + "</Item></DicomAttribute>" * depth
        + "</NativeDicomModel>"
    )


_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
    + ']><NativeDicomModel><DicomAttribute tag="00100010" vr="PN"><PersonName number="1">'
    "<Alphabetic><FamilyName>&i;</FamilyName></Alphabetic></PersonName></DicomAttribute></NativeDicomModel>"
)
XML_BODIES = {
    "100,000-deep nesting": ("<a>" * 100_000 + "</a>" * 100_000, "nested deeper than"),
    "10,000 nested SQ items": (_xml_sq(10_000), "nested deeper than"),
    "VR ZZ": (
        '<NativeDicomModel><DicomAttribute tag="00100010" vr="ZZ"><Value number="1">X</Value>'
        "</DicomAttribute></NativeDicomModel>",
        "'ZZ' is not a DICOM VR",
    ),
    "billion laughs": (_LAUGHS, "XML"),
    "bad tag": ('<NativeDicomModel><DicomAttribute tag="xyz" vr="PN"/></NativeDicomModel>', "not 8 hex"),
}


def _send_metadata(node: RunningNode, media_type: str, text: str | bytes) -> httpx.Response:
    content = text if isinstance(text, bytes) else text.encode()
    return post(node, multipart([({"Content-Type": media_type}, content)]), content_type(media_type))


CASES = [("application/dicom+json", case, *JSON_BODIES[case]) for case in JSON_BODIES] + [
    ("application/dicom+xml", case, *XML_BODIES[case]) for case in XML_BODIES
]


@pytest.mark.parametrize(
    ("media_type", "case", "text", "reason"), CASES, ids=[f"{c[0][12:]}: {c[1]}" for c in CASES]
)
def test_hostile_metadata_is_a_named_409(node, media_type, case, text, reason):
    r = _send_metadata(node, media_type, text)
    assert r.status_code == 409, (case, r.status_code, r.text[:300])
    (item,) = failed_items(r.json())
    assert item["00081197"]["Value"] == [0xC901], case
    assert reason in item["00000902"]["Value"][0], (case, item)


def test_node_keeps_serving_after_the_hostile_bodies(node, tmp_path):
    path = write(make_dataset(study_uid=generate_uid(), series_uid=generate_uid()), tmp_path / "ok.dcm")
    before = node.count()
    r = post(node, multipart(dicom_parts([path])), content_type())
    assert r.status_code == 200
    assert node.count() == before + 1
    assert node.health()["status"] == "ok"
    assert "Traceback" not in node.log()


def test_boundaries_up_to_200_characters(node, tmp_path):
    paths = [
        write(make_dataset(study_uid=generate_uid(), series_uid=generate_uid()), tmp_path / f"{n}.dcm")
        for n in range(2)
    ]
    for boundary in ("b" * 73, "x" * 200):
        r = post(node, multipart(dicom_parts(paths), boundary), content_type(boundary=boundary))
        assert r.status_code == 200, r.text
        assert len(referenced_items(r.json())) == 2
    r = post(node, multipart(dicom_parts(paths), "y" * 201), content_type(boundary="y" * 201))
    assert r.status_code == 400
    assert "1-200" in r.json()["error"]


@pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc is not installed")
def test_orthanc_dicomweb_client_stows_into_the_node(node, tmp_path):
    path = write(make_dataset(study_uid=generate_uid(), series_uid=generate_uid()), tmp_path / "o.dcm")
    before = node.count()
    servers = {"node": f"{node.url}/dicom-web/"}
    with Orthanc(tmp_path / "orthanc", dicomweb_servers=servers).start() as orthanc:
        uploaded = httpx.post(f"{orthanc.url}/instances", content=path.read_bytes(), timeout=30)
        assert uploaded.status_code == 200, uploaded.text
        r = httpx.post(
            f"{orthanc.url}/dicom-web/servers/node/stow",
            content=json.dumps({"Resources": [uploaded.json()["ID"]], "Synchronous": True}),
            timeout=60,
        )
        assert r.status_code == 200, r.text
    assert node.count() == before + 1
