"""``POST /forward/{scu}/{scp}/studies`` (POSTCSTORE) against real remotes over a real socket."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import MRImageStorage, generate_uid

from bench.corpus import encode_as, make_dataset, write, write_corpus
from tests.forward_peers import RefusingSCP
from tests.harness import RunningNode, StoreSCP, dataset_bytes, free_port, node_config

BOUNDARY = "gatewayBoundary"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
SOP_INSTANCE_UID = "00081155"


def multipart(parts: list[tuple[str, bytes, dict[str, str]]]) -> bytes:
    out = io.BytesIO()
    for ctype, content, headers in parts:
        out.write(f"\r\n--{BOUNDARY}\r\nContent-Type: {ctype}\r\n".encode())
        for name, value in headers.items():
            out.write(f"{name}: {value}\r\n".encode())
        out.write(b"\r\n" + content)
    out.write(f"\r\n--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def post_forward(node, scu: str, scp: str, body: bytes, root: str = "application/dicom") -> httpx.Response:
    return httpx.post(
        f"{node.url}/forward/{scu}/{scp}/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="{root}"; boundary={BOUNDARY}',
            **node.auth_headers(),
        },
        timeout=60,
    )


def dicom_body(paths: list[Path]) -> bytes:
    return multipart([("application/dicom", p.read_bytes(), {}) for p in paths])


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def items(body: dict, key: str) -> list[dict]:
    return body.get(key, {}).get("Value", [])


def uids(seq: list[dict]) -> set[str]:
    return {item[SOP_INSTANCE_UID]["Value"][0] for item in seq}


@dataclass
class Gateway:
    node: RunningNode
    refuser: RefusingSCP  # CT only, accepts
    a900: RefusingSCP  # CT only, answers 0xA900
    pacs: StoreSCP
    down_port: int
    implicit: StoreSCP  # takes Implicit VR Little Endian only


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[Gateway]:
    """One node with every kind of remote, for the tests that only add instances."""
    root = tmp_path_factory.mktemp("gateway")
    refuser, a900 = RefusingSCP(status=0x0000), RefusingSCP("A900", status=0xA900)
    down_port = free_port()
    implicit = StoreSCP(root / "implicit", ae_title="IMPLONLY", extra=("+xi",))
    with StoreSCP(root / "pacs", ae_title="PACS").start() as pacs, implicit.start():
        remotes = [
            refuser.remote(),
            a900.remote("a900"),
            pacs.remote("pacs"),
            {"name": "down", "ae_title": "DOWNPACS", "host": "127.0.0.1", "port": down_port},
            implicit.remote("implicit"),
        ]
        node = RunningNode(root / "node", node_config(root / "node", remotes=remotes)).start()
        try:
            yield Gateway(node, refuser, a900, pacs, down_port, implicit)
        finally:
            node.stop()
            refuser.stop()
            a900.stop()


def test_five_instances_reach_the_remote_and_stay_here(node_factory, tmp_path):
    with StoreSCP(tmp_path / "pacs", ae_title="PACS").start() as pacs:
        # forward = true too: the gateway's instances must not be sent to it a second time.
        node = node_factory(remotes=[pacs.remote("pacs", forward=True)]).start()
        paths = write_corpus(tmp_path / "c", studies=1, instances=5)
        r = post_forward(node, "POSTCSTORE", "PACS", dicom_body(paths))

        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/dicom+json")
        assert uids(items(r.json(), REFERENCED_SOP_SEQUENCE)) == {sop_uid(p) for p in paths}
        assert FAILED_SOP_SEQUENCE not in r.json()
        # Sent before the answer: the files are already at the remote, byte for byte.
        at_remote = {sop_uid(p): p for p in pacs.files()}
        assert len(pacs.files()) == 5
        for path in paths:
            assert dataset_bytes(at_remote[sop_uid(path)]) == dataset_bytes(path)
        assert node.count() == 5
        assert node.health()["outbox"] == {"pending": 0, "done": 0, "failed": 0}
        expected = "POST /forward/POSTCSTORE/PACS/studies -> 200"
    deadline = time.monotonic() + 5
    while expected not in node.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in node.log().splitlines() if expected in x)
    assert "5 stored here, 5 accepted and 0 refused by PACS" in line


def test_calling_ae_is_the_scu_of_the_url(gw, tmp_path):
    paths = write_corpus(tmp_path / "c", studies=1, instances=2)
    calls = len(gw.refuser.calling)
    r = post_forward(gw.node, "MY_SCU", gw.refuser.ae_title, dicom_body(paths))
    assert r.status_code == 200, r.text
    assert gw.refuser.calling[calls:] == ["MY_SCU", "MY_SCU"]
    assert {sop_uid(p) for p in paths} <= set(gw.refuser.received)


def test_unknown_scp_is_404_and_bad_scu_is_400_and_nothing_is_stored(gw, tmp_path):
    node, refuser = gw.node, gw.refuser
    before, calls = node.count(), len(refuser.calling)
    body = dicom_body(write_corpus(tmp_path / "c", studies=1, instances=2))

    r = post_forward(node, "SCU", "NOBODY", body)
    assert r.status_code == 404
    assert "NOBODY" in r.json()["error"] and refuser.ae_title in r.json()["error"]

    r = post_forward(node, "A" * 17, refuser.ae_title, body)
    assert r.status_code == 400
    assert "not valid" in r.json()["error"]
    r = post_forward(node, "BAD%5CAE", refuser.ae_title, body)
    assert r.status_code == 400

    assert node.count() == before and len(refuser.calling) == calls
    r = httpx.post(
        f"{node.url}/forward/SCU/{refuser.ae_title}/studies",
        content=b"x",
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 415


def test_unreachable_remote_is_502_naming_it_and_the_instances_are_kept(gw, tmp_path):
    node, port = gw.node, gw.down_port
    before = node.count()
    paths = write_corpus(tmp_path / "c", studies=1, instances=3)
    r = post_forward(node, "SCU", "DOWNPACS", dicom_body(paths))
    assert r.status_code == 502
    error = r.json()["error"]
    assert "down" in error and f"DOWNPACS@127.0.0.1:{port}" in error
    assert r.json()["stored"] == 3
    assert node.count() == before + 3


def test_remote_refusing_every_instance_is_409_with_its_status(gw, tmp_path):
    before = gw.node.count()
    paths = write_corpus(tmp_path / "c", studies=1, instances=3)
    r = post_forward(gw.node, "SCU", "A900", dicom_body(paths))
    assert r.status_code == 409, r.text
    failed = items(r.json(), FAILED_SOP_SEQUENCE)
    assert uids(failed) == {sop_uid(p) for p in paths}
    assert {item[FAILURE_REASON]["Value"][0] for item in failed} == {0xA900}
    assert REFERENCED_SOP_SEQUENCE not in r.json()
    assert gw.node.count() == before + 3  # kept here all the same


def test_unsupported_sop_class_is_409_and_mixed_acceptance_is_202(gw, tmp_path):
    node, refuser = gw.node, gw.refuser
    study, series = generate_uid(), generate_uid()
    mr = [
        write(
            make_dataset(study_uid=study, series_uid=series, sop_class_uid=MRImageStorage),
            tmp_path / f"mr{i}.dcm",
        )
        for i in range(2)
    ]
    r = post_forward(node, "SCU", refuser.ae_title, dicom_body(mr))
    assert r.status_code == 409, r.text
    failed = items(r.json(), FAILED_SOP_SEQUENCE)
    assert uids(failed) == {sop_uid(p) for p in mr}
    assert {item[FAILURE_REASON]["Value"][0] for item in failed} == {0x0122}

    ct = [write(make_dataset(study_uid=study, series_uid=series), tmp_path / f"ct{i}.dcm") for i in range(3)]
    r = post_forward(node, "SCU", refuser.ae_title, dicom_body(ct + mr))
    assert r.status_code == 202, r.text
    assert uids(items(r.json(), REFERENCED_SOP_SEQUENCE)) == {sop_uid(p) for p in ct}
    assert uids(items(r.json(), FAILED_SOP_SEQUENCE)) == {sop_uid(p) for p in mr}
    assert {sop_uid(p) for p in ct} <= set(refuser.received)
    assert not {sop_uid(p) for p in mr} & set(refuser.received)


def test_json_metadata_body_is_built_then_forwarded(gw, tmp_path):
    node, pacs = gw.node, gw.pacs
    pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
    metadata = [
        {
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.104.1"]},
            "00080060": {"vr": "CS", "Value": ["DOC"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "REPORT^PDF"}]},
            "00100020": {"vr": "LO", "Value": ["PDFPAT"]},
            "0020000D": {"vr": "UI", "Value": [generate_uid()]},
            "00420011": {"vr": "OB", "BulkDataURI": "report.pdf"},
        }
    ]
    body = multipart(
        [
            ("application/dicom+json", json.dumps(metadata).encode(), {}),
            ("application/pdf", pdf, {"Content-Location": "report.pdf"}),
        ]
    )
    r = post_forward(node, "SCU", "PACS", body, root="application/dicom+json")
    assert r.status_code == 200, r.text
    (item,) = items(r.json(), REFERENCED_SOP_SEQUENCE)
    uid = item[SOP_INSTANCE_UID]["Value"][0]
    (sent,) = [p for p in pacs.files() if sop_uid(p) == uid]
    ds = dcmread(sent)
    assert bytes(ds.EncapsulatedDocument).rstrip(b"\0") == pdf.rstrip(b"\0")


def test_large_instances_to_a_remote_taking_small_pdus_arrive_byte_identical(node_factory, tmp_path):
    with StoreSCP(tmp_path / "pacs", ae_title="SMALLPDU", extra=("-pdu", "4096")).start() as pacs:
        node = node_factory(remotes=[pacs.remote("small")]).start()
        paths = write_corpus(tmp_path / "c", studies=1, instances=3, size="ct")
        r = post_forward(node, "SCU", "SMALLPDU", dicom_body(paths))
        assert r.status_code == 200, r.text
        at_remote = {sop_uid(p): p for p in pacs.files()}
        for path in paths:
            assert dataset_bytes(at_remote[sop_uid(path)]) == dataset_bytes(path)


def test_compressed_instances_to_an_implicit_only_remote_arrive_converted(gw, tmp_path):
    """JPEG-LS and RLE through the gateway to a remote taking Implicit VR LE only: converted, decodable."""
    study = generate_uid()
    paths = [
        encode_as(
            make_dataset(study_uid=study, series_uid=generate_uid(), phantom=True),
            syntax,
            tmp_path / f"{n}.dcm",
        )
        for n, syntax in enumerate(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"))
    ]
    r = post_forward(gw.node, "POSTCSTORE", "IMPLONLY", dicom_body(paths))
    assert r.status_code == 200, r.text
    at_remote = {sop_uid(p): p for p in gw.implicit.files()}
    for path in paths:
        got = dcmread(at_remote[sop_uid(path)])
        assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        assert np.array_equal(got.pixel_array, dcmread(path).pixel_array)
    expected = "2 of 2 accepted, 2 transcoded (2 to 1.2.840.10008.1.2)"
    assert any(expected in line and "IMPLONLY" in line for line in gw.node.log().splitlines())
