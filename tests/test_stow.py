"""STOW-RS over a real socket: dicomweb-client, curl, httpx against a running node."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import zlib
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write, write_corpus
from tests.harness import RunningNode, dataset_bytes, node_config

BOUNDARY = "DICOMwebBoundary"


def multipart(parts: list[tuple[dict[str, str], bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart/related body: CRLF--boundary, headers, CRLF, content, ..., --boundary--."""
    out = io.BytesIO()
    for headers, content in parts:
        out.write(f"\r\n--{boundary}\r\n".encode())
        for name, value in headers.items():
            out.write(f"{name}: {value}\r\n".encode())
        out.write(b"\r\n")
        out.write(content)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue()


def content_type(root: str = "application/dicom", boundary: str = BOUNDARY) -> str:
    return f'multipart/related; type="{root}"; boundary={boundary}'


def dicom_parts(paths: list[Path]) -> list[tuple[dict[str, str], bytes]]:
    return [({"Content-Type": "application/dicom"}, p.read_bytes()) for p in paths]


def stored_file(node: RunningNode, sop_uid: str) -> Path:
    matches = list(node.storage.rglob(f"{sop_uid}.dcm"))
    assert len(matches) == 1, matches
    return matches[0]


def temp_files(node: RunningNode) -> list[Path]:
    return list((node.storage / ".tmp").iterdir())


def post(
    node: RunningNode, body: bytes, ctype: str, path: str = "/dicom-web/studies", **headers
) -> httpx.Response:
    return httpx.post(
        node.url + path,
        content=body,
        headers={"Content-Type": ctype, **headers, **node.auth_headers()},
        timeout=60,
    )


def jpeg_bytes(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> bytes:
    image = Image.new(mode, size, (10, 200, 30) if mode == "RGB" else 99)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def failed_items(body: dict) -> list[dict]:
    return body.get("00081198", {}).get("Value", [])


def referenced_items(body: dict) -> list[dict]:
    return body.get("00081199", {}).get("Value", [])


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> RunningNode:
    """One node for the tests that only add instances (counts are compared as deltas)."""
    root = tmp_path_factory.mktemp("stow")
    node = RunningNode(root, node_config(root, http={"max_body_bytes": 50_000_000, "max_parts": 100}))
    node.start()
    yield node
    node.stop()


def test_dicomweb_client_store_instances(shared, tmp_path):
    paths = write_corpus(tmp_path / "c", studies=1, series=1, instances=5, size="tiny")
    before = shared.count()
    client = DICOMwebClient(url=shared.url + "/dicom-web")
    response = client.store_instances([dcmread(p) for p in paths])
    refs = response.ReferencedSOPSequence
    assert len(refs) == 5
    assert "FailedSOPSequence" not in response
    assert shared.count() == before + 5
    for path in paths:
        sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        # dicomweb-client re-encodes the data set; the node keeps what it was sent.
        assert dcmread(stored_file(shared, sop)).PixelData == dcmread(path).PixelData
    item = refs[0]
    assert item.RetrieveURL.endswith(f"/instances/{item.ReferencedSOPInstanceUID}")


def test_curl_recipe_with_echo_heads_and_cat(shared, tmp_path):
    paths = write_corpus(tmp_path / "c", studies=1, series=1, instances=2, size="tiny")
    study = dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    script = f"""
set -e
cd {tmp_path}
echo -ne "\\r\\n--myboundary\\r\\nContent-Type: application/dicom\\r\\n\\r\\n" > head
echo -ne "\\r\\n--myboundary--" > tail
cat head {paths[0]} head {paths[1]} tail > body
curl -s -o response.json -w '%{{http_code}}' -X POST \\
  -H 'Content-Type: multipart/related; type="application/dicom"; boundary=myboundary' \\
  -H 'Accept: application/dicom+json' \\
  --data-binary @body {shared.url}/dicom-web/studies/{study}
"""
    before = shared.count()
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout == "200", result.stderr
    assert shared.count() == before + 2
    body = json.loads((tmp_path / "response.json").read_text())
    assert body["00081190"]["Value"] == [f"{shared.url}/dicom-web/studies/{study}"]
    for path in paths:
        sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(stored_file(shared, sop)) == dataset_bytes(path)


@pytest.mark.parametrize(
    ("mode", "photometric", "samples"), [("RGB", "YBR_FULL_422", 3), ("L", "MONOCHROME2", 1)]
)
def test_json_metadata_with_jpeg_bulk_becomes_encapsulated_pixel_data(shared, mode, photometric, samples):
    jpeg = jpeg_bytes(mode, (64, 48))
    study = generate_uid()
    metadata = [
        {
            "00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]},  # file meta: ignored
            "00080020": {"vr": "DA"},  # empty attributes are legal
            "00080060": {"vr": "CS", "Value": ["OT"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "PHOTO^JPEG"}]},
            "00100020": {"vr": "LO", "Value": ["JPEGPAT"]},
            "0020000D": {"vr": "UI", "Value": [study]},
            "7FE00010": {"vr": "OB", "BulkDataURI": "file1.jpg"},
        }
    ]
    body = multipart(
        [
            ({"Content-Type": "application/dicom+json"}, json.dumps(metadata).encode()),
            ({"Content-Type": "image/jpeg", "Content-Location": "file1.jpg"}, jpeg),
        ]
    )
    r = post(shared, body, content_type("application/dicom+json"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    (item,) = referenced_items(r.json())
    sop = item["00081155"]["Value"][0]
    assert item["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.7"]  # Secondary Capture
    ds = dcmread(stored_file(shared, sop))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert 0x00020010 not in ds  # the sender's file meta did not leak into the data set
    assert (ds.Rows, ds.Columns) == (48, 64)
    assert (ds.SamplesPerPixel, ds.PhotometricInterpretation) == (samples, photometric)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0)
    assert ds.StudyInstanceUID == study and ds.PatientName == "PHOTO^JPEG"
    assert ds.SeriesInstanceUID.startswith("2.25.") and sop.startswith("2.25.")
    (frame,) = list(generate_frames(ds.PixelData, number_of_frames=1))
    assert frame[: len(jpeg)] == jpeg and len(frame) - len(jpeg) <= 1


def test_jpeg_contradicting_metadata_is_coerced_with_warning(shared):
    metadata = [{"00280010": {"vr": "US", "Value": [999]}, "7FE00010": {"vr": "OB", "BulkDataURI": "x.jpg"}}]
    body = multipart(
        [
            ({"Content-Type": "application/dicom+json"}, json.dumps(metadata).encode()),
            ({"Content-Type": "image/jpeg", "Content-Location": "x.jpg"}, jpeg_bytes("L", (20, 10))),
        ]
    )
    r = post(shared, body, content_type("application/dicom+json"))
    assert r.status_code == 202, r.text
    (item,) = referenced_items(r.json())
    assert item["00081196"]["Value"] == [0xB000]
    assert dcmread(stored_file(shared, item["00081155"]["Value"][0])).Rows == 10


CDA = b"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>Informe radiol\xc3\xb3gico</title>
<component><structuredBody/></component></ClinicalDocument>
"""


def test_postcstore_style_dicom_xml_with_cda_bulk(shared):
    study = generate_uid()
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">
 <DicomAttribute tag="00080016" vr="UI" keyword="SOPClassUID"><Value number="1">1.2.840.10008.5.1.4.1.1.104.2</Value></DicomAttribute>
 <DicomAttribute tag="00080060" vr="CS" keyword="Modality"><Value number="1">DOC</Value></DicomAttribute>
 <DicomAttribute tag="00100010" vr="PN" keyword="PatientName"><PersonName number="1"><Alphabetic><FamilyName>Pérez</FamilyName><GivenName>Ana</GivenName></Alphabetic></PersonName></DicomAttribute>
 <DicomAttribute tag="00100020" vr="LO" keyword="PatientID"><Value number="1">CDA1</Value></DicomAttribute>
 <DicomAttribute tag="0020000D" vr="UI" keyword="StudyInstanceUID"><Value number="1">{study}</Value></DicomAttribute>
 <DicomAttribute tag="00200013" vr="IS" keyword="InstanceNumber"><Value number="1">1</Value></DicomAttribute>
 <DicomAttribute tag="00400555" vr="SQ" keyword="AcquisitionContextSequence"/>
 <DicomAttribute tag="00420012" vr="LO" keyword="MIMETypeOfEncapsulatedDocument"><Value number="1">text/XML</Value></DicomAttribute>
 <DicomAttribute tag="00420011" vr="OB" keyword="EncapsulatedDocument"><BulkData uri="bulk"/></DicomAttribute>
</NativeDicomModel>""".encode()  # noqa: E501
    body = multipart(
        [
            ({"Content-Type": "application/dicom+xml"}, xml),
            ({"Content-Type": "text/xml", "Content-Location": "bulk"}, CDA),
        ]
    )
    r = post(shared, body, content_type("application/dicom+xml"), path=f"/dicom-web/studies/{study}")
    assert r.status_code == 200, r.text
    (item,) = referenced_items(r.json())
    ds = dcmread(stored_file(shared, item["00081155"]["Value"][0]))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.2"
    assert ds.EncapsulatedDocumentLength == len(CDA)
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == CDA
    assert str(ds.PatientName) == "Pérez^Ana"
    assert ds.file_meta.ImplementationClassUID.startswith("2.25.")


def test_json_pdf_bulk_becomes_encapsulated_pdf(shared):
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    metadata = [{"00420011": {"vr": "OB", "BulkDataURI": "http://client/report.pdf"}}]
    body = multipart(
        [
            ({"Content-Type": "application/dicom+json"}, json.dumps(metadata).encode()),
            ({"Content-Type": "application/pdf", "Content-Location": "http://client/report.pdf"}, pdf),
        ]
    )
    r = post(shared, body, content_type("application/dicom+json"))
    assert r.status_code == 200, r.text
    (item,) = referenced_items(r.json())
    ds = dcmread(stored_file(shared, item["00081155"]["Value"][0]))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == pdf


def test_missing_bulk_data_is_a_failure_naming_it(shared):
    metadata = [{"7FE00010": {"vr": "OB", "BulkDataURI": "absent.jpg"}}]
    body = multipart([({"Content-Type": "application/dicom+json"}, json.dumps(metadata).encode())])
    before = shared.count()
    r = post(shared, body, content_type("application/dicom+json"))
    assert r.status_code == 409
    (item,) = failed_items(r.json())
    assert item["00081197"]["Value"] == [0xC902]
    assert "absent.jpg" in item["00000902"]["Value"][0]
    assert shared.count() == before


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_body(shared, tmp_path, encoding):
    paths = write_corpus(tmp_path / "c", studies=1, series=1, instances=3, size="tiny")
    body = multipart(dicom_parts(paths))
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    before = shared.count()
    r = post(shared, packed, content_type(), **{"Content-Encoding": encoding})
    assert r.status_code == 200, r.text
    assert shared.count() == before + 3


def test_study_uid_mismatch_is_409_with_failed_sop_sequence(shared, tmp_path):
    (path,) = write_corpus(tmp_path / "c", studies=1, series=1, instances=1)
    ds = dcmread(path, stop_before_pixels=True)
    other = generate_uid()
    before = shared.count()
    r = post(shared, multipart(dicom_parts([path])), content_type(), path=f"/dicom-web/studies/{other}")
    assert r.status_code == 409
    (item,) = failed_items(r.json())
    assert item["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert item["00081150"]["Value"] == [ds.SOPClassUID]
    assert item["00081197"]["Value"] == [0xC409]
    assert shared.count() == before
    assert not temp_files(shared)


def test_text_plain_is_415(shared):
    r = post(shared, b"hello", "text/plain")
    assert r.status_code == 415
    assert "text/plain" in r.json()["error"]
    r = post(shared, multipart([]), content_type("image/png"))
    assert r.status_code == 415


def test_truncated_body_is_400_and_stores_nothing(shared, tmp_path):
    paths = write_corpus(tmp_path / "c", studies=1, series=1, instances=3, size="tiny")
    body = multipart(dicom_parts(paths))
    before = shared.count()
    # The first two parts are complete; the third is cut and there is no closing delimiter.
    r = post(shared, body[: len(body) - 500], content_type())
    assert r.status_code == 400
    assert "truncated" in r.json()["error"]
    assert shared.count() == before
    assert not temp_files(shared)
    # No delimiter at all.
    r = post(shared, b"just some bytes", content_type())
    assert r.status_code == 400
    assert "no multipart delimiter" in r.json()["error"]
    # Truncated gzip stream.
    r = post(shared, gzip.compress(body)[:-100], content_type(), **{"Content-Encoding": "gzip"})
    assert r.status_code == 400
    assert shared.count() == before
    assert not temp_files(shared)
    # The node keeps serving.
    assert post(shared, body, content_type()).status_code == 200


def test_mixed_valid_and_non_dicom_parts_is_202(shared, tmp_path):
    paths = write_corpus(tmp_path / "c", studies=1, series=1, instances=2, size="tiny")
    parts = dicom_parts(paths)
    parts.insert(1, ({"Content-Type": "application/dicom"}, b"this is not a DICOM file" * 10))
    parts.append(({"Content-Type": "text/plain"}, b"neither is this"))
    before = shared.count()
    r = post(shared, multipart(parts), content_type())
    assert r.status_code == 202, r.text
    body = r.json()
    assert len(referenced_items(body)) == 2
    failed = failed_items(body)
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000], [0xC000]]
    assert "part 2" in failed[0]["00000902"]["Value"][0]
    assert "part 4" in failed[1]["00000902"]["Value"][0]
    assert shared.count() == before + 2
    assert not temp_files(shared)


@pytest.mark.parametrize(
    ("ctype", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary="{b}"', "quoted with spaces ()+_,-./:=?"),
        ("multipart/related; type=application/dicom; boundary={b}", "bare-boundary_1234567890"),
        ('Multipart/Related;boundary="{b}";type="application/dicom"', "x" * 70),
        ("multipart/related; boundary={b}", "no-type-param"),
    ],
)
def test_boundary_and_type_forms(shared, tmp_path, ctype, boundary):
    paths = write_corpus(tmp_path / "c", studies=1, series=1, instances=2, size="tiny")
    before = shared.count()
    r = post(shared, multipart(dicom_parts(paths), boundary), ctype.format(b=boundary))
    assert r.status_code == 200, r.text
    assert shared.count() == before + 2


def test_empty_multipart_is_204(shared):
    r = post(shared, f"--{BOUNDARY}--\r\n".encode(), content_type())
    assert r.status_code == 204


def test_limits_answer_413(node_factory, tmp_path):
    node = node_factory("limited", http={"max_body_bytes": 20_000, "max_parts": 3}).start()
    paths = write_corpus(tmp_path / "c", studies=1, series=1, instances=4, size="tiny")
    # Too many parts.
    r = post(node, multipart(dicom_parts(paths)), content_type())
    assert r.status_code == 413
    assert "max_parts" in r.json()["error"]
    # Too large (announced by Content-Length).
    big = write(
        make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), size="ct"), tmp_path / "ct.dcm"
    )
    r = post(node, multipart(dicom_parts([big])), content_type())
    assert r.status_code == 413
    # Too large once inflated (a small gzip body).
    r = post(
        node, gzip.compress(multipart(dicom_parts([big]))), content_type(), **{"Content-Encoding": "gzip"}
    )
    assert r.status_code == 413
    assert node.count() == 0
    assert not temp_files(node)
    assert post(node, multipart(dicom_parts(paths[:1])), content_type()).status_code == 200


def test_token_required_except_health(node_factory, tmp_path):
    node = node_factory("secured", http={"token": "s3cret"}).start()
    (path,) = write_corpus(tmp_path / "c", studies=1, series=1, instances=1)
    body = multipart(dicom_parts([path]))
    url = node.url + "/dicom-web/studies"
    assert httpx.post(url, content=body, headers={"Content-Type": content_type()}).status_code == 401
    wrong = {"Content-Type": content_type(), "Authorization": "Bearer nope"}
    assert httpx.post(url, content=body, headers=wrong).status_code == 401
    assert httpx.get(node.url + "/health").status_code == 200
    assert node.count() == 0
    good = {"Content-Type": content_type(), "Authorization": "Bearer s3cret"}
    assert httpx.post(url, content=body, headers=good).status_code == 200
    assert node.count() == 1
    client = DICOMwebClient(url=node.url + "/dicom-web", headers={"Authorization": "Bearer s3cret"})
    assert len(client.store_instances([dcmread(path)]).ReferencedSOPSequence) == 1


def mpeg2_stream(width: int, height: int) -> bytes:
    """A stand-in MPEG-2 elementary stream: pack header, sequence header, filler."""
    seq = b"\x00\x00\x01\xb3" + bytes([width >> 4, ((width & 0xF) << 4) | (height >> 8), height & 0xFF])
    return b"\x00\x00\x01\xba" + b"\x44" * 10 + seq + b"\x13\xff\xff\xe0" + b"\x00" * 301


@pytest.mark.parametrize(
    ("ctype", "data", "syntax"),
    [
        ("video/mpeg", mpeg2_stream(720, 576), "1.2.840.10008.1.2.4.100"),
        ("video/mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 501, "1.2.840.10008.1.2.4.102"),
    ],
)
def test_video_bulk_becomes_encapsulated_video(shared, ctype, data, syntax):
    metadata = [
        {
            "00280008": {"vr": "IS", "Value": [25]},
            "00280010": {"vr": "US", "Value": [576]},
            "00280011": {"vr": "US", "Value": [720]},
            "7FE00010": {"vr": "OB", "BulkDataURI": "movie"},
        }
    ]
    body = multipart(
        [
            ({"Content-Type": "application/dicom+json"}, json.dumps(metadata).encode()),
            ({"Content-Type": ctype, "Content-Location": "movie"}, data),
        ]
    )
    r = post(shared, body, content_type("application/dicom+json"))
    assert r.status_code == 200, r.text
    (item,) = referenced_items(r.json())
    ds = dcmread(stored_file(shared, item["00081155"]["Value"][0]))
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4.1"
    assert (ds.Rows, ds.Columns, ds.NumberOfFrames) == (576, 720, 25)
    fragments = b"".join(generate_frames(ds.PixelData, number_of_frames=1))
    assert fragments[: len(data)] == data


def test_bad_metadata_and_generic_part10(shared, tmp_path):
    (path,) = write_corpus(tmp_path / "c", studies=1, series=1, instances=1)
    body = multipart(
        [
            ({"Content-Type": "application/dicom+json"}, b"[{not json"),
            ({"Content-Type": "application/dicom+xml"}, b"<NativeDicomModel><DicomAttribute"),
            # A Part-10 file sent as application/octet-stream is still taken.
            ({"Content-Type": "application/octet-stream"}, path.read_bytes()),
        ]
    )
    r = post(shared, body, content_type("application/dicom+json"))
    assert r.status_code == 202, r.text
    body = r.json()
    assert [f["00081197"]["Value"] for f in failed_items(body)] == [[0xC901], [0xC901]]
    assert "not valid JSON" in failed_items(body)[0]["00000902"]["Value"][0]
    assert "not well-formed XML" in failed_items(body)[1]["00000902"]["Value"][0]
    (item,) = referenced_items(body)
    assert item["00081155"]["Value"] == [dcmread(path, stop_before_pixels=True).SOPInstanceUID]
