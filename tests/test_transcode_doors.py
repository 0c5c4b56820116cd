"""Transcoding at the DICOM doors that send, against real peers: DCMTK getscu, movescu, storescp +xi.

One study, one node: CT series stored as JPEG-LS, JPEG 2000 and RLE
(lossless, written by the codecs the node uses) and a Secondary Capture
series stored as JPEG baseline (written by DCMTK's dcmcjpeg).  getscu with
each preference retrieves the whole study: every sub-operation succeeds,
the pixel data equals pydicom's decoding of the original (exactly for the
lossless ones), a syntax the peer offers that the node stores goes out as
the stored bytes, and getscu releases the association normally.  A C-MOVE
destination and a forward remote that accept only Implicit VR Little
Endian (storescp +xi) get every instance, decodable.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from bench.corpus import encode_as, make_dataset, write
from tests.harness import (
    NODE_AE,
    RunningNode,
    StoreSCP,
    c_store,
    dataset_bytes,
    dcmtk,
    node_config,
    wait_until,
)

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG = "1.2.840.10008.1.2.4.50"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
STUDY = generate_uid()
BAD_STUDY = generate_uid()  # one JPEG 2000 instance whose codestream header is destroyed
# name -> (stored syntax, SOP class, largest difference allowed against pydicom's decoding)
CORPUS = {
    "jls": (JLS, CTImageStorage, 0),
    "j2k": (J2K, CTImageStorage, 0),
    "rle": (RLE, CTImageStorage, 0),
    "jpeg": (JPEG, SecondaryCaptureImageStorage, 2),  # decoders of lossy JPEG may differ by a unit or two
}


def _dataset(name: str, number: int, sop_class: str):
    ds = make_dataset(
        study_uid=STUDY,
        series_uid=generate_uid(),
        sop_class_uid=sop_class,
        instance_number=1,
        series_number=number,
        phantom=True,
    )
    if sop_class == SecondaryCaptureImageStorage:  # JPEG baseline holds 8-bit samples
        arr = np.frombuffer(ds.PixelData, "<u2")
        for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = (arr >> 4).astype(np.uint8).tobytes()
    return ds


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("transcode-doors")
    originals: dict[str, Path] = {}  # SOP UID -> original file
    names: dict[str, str] = {}  # SOP UID -> corpus name
    for number, (name, (syntax, sop_class, _)) in enumerate(CORPUS.items(), 1):
        ds = _dataset(name, number, sop_class)
        originals[ds.SOPInstanceUID] = encode_as(ds, syntax, root / "corpus" / f"{name}.dcm")
        names[ds.SOPInstanceUID] = name
    bad = _dataset("bad", 1, CTImageStorage)
    bad.StudyInstanceUID = BAD_STUDY
    path = encode_as(bad, J2K, root / "corpus" / "bad.dcm")
    data = bytearray(path.read_bytes())
    soc = data.index(b"\xff\x4f\xff\x51")  # SOC + SIZ
    data[soc + 2 : soc + 40] = bytes(38)
    path.write_bytes(bytes(data))
    # Destinations that take Implicit VR Little Endian only (+xi), and write what they get as it came.
    mover = StoreSCP(root / "moved", ae_title="IMPLICIT", extra=("+xi",)).start()
    forward = StoreSCP(root / "forwarded", ae_title="FWDIMPL", extra=("+xi",)).start()
    remotes = [mover.remote("implicit"), forward.remote("fwdimpl", forward=True)]
    node = RunningNode(root / "node", node_config(root / "node", storage={"fsync": False}, remotes=remotes))
    result = node.cli("import", "-q", str(root / "corpus"))
    assert result.returncode == 0, result.stderr
    node.start()
    # The C-GET negotiation reads what the node stores per SOP class in the background at start.
    wait_until("stored syntaxes read", lambda: "stored transfer syntaxes of 2 SOP classes" in node.log())
    try:
        yield {
            "node": node,
            "originals": originals,
            "names": names,
            "mover": mover,
            "forward": forward,
            "bad": bad.SOPInstanceUID,
        }
    finally:
        node.stop()
        mover.stop()
        forward.stop()


def _check_pixels(files: list[Path], env) -> dict[str, str]:
    """Each received file decodes to the original's pixels; returns {corpus name: syntax received}."""
    got = {}
    for path in files:
        ds = dcmread(path)
        name = env["names"][ds.SOPInstanceUID]
        _, _, tolerance = CORPUS[name]
        original = dcmread(env["originals"][ds.SOPInstanceUID]).pixel_array
        received = ds.pixel_array
        assert received.shape == original.shape, name
        diff = int(np.abs(received.astype(int) - original.astype(int)).max())
        assert diff <= tolerance, (name, ds.file_meta.TransferSyntaxUID, diff)
        got[name] = str(ds.file_meta.TransferSyntaxUID)
    return got


# option -> what each instance arrives as (the syntax of the one context its SOP class got)
GET_CASES = {
    "default": ((), {"jls": EXPLICIT, "j2k": EXPLICIT, "rle": EXPLICIT, "jpeg": EXPLICIT}),
    # JPEG lossless SV1 first: not written by the node, so explicit VR for every class.
    "+xs": (("+xs",), {"jls": EXPLICIT, "j2k": EXPLICIT, "rle": EXPLICIT, "jpeg": EXPLICIT}),
    # JPEG baseline first: the SC class is stored in it (sent as stored); CT is not, and
    # JPEG baseline would lose data: explicit VR.
    "+B +xy": (("+B", "+xy"), {"jls": EXPLICIT, "j2k": EXPLICIT, "rle": EXPLICIT, "jpeg": JPEG}),
    "+xv": (("+xv",), {"jls": J2K, "j2k": J2K, "rle": J2K, "jpeg": J2K}),
    "+xr": (("+xr",), {"jls": RLE, "j2k": RLE, "rle": RLE, "jpeg": RLE}),
    "+B +xt": (("+B", "+xt"), {"jls": JLS, "j2k": JLS, "rle": JLS, "jpeg": JLS}),
}


@pytest.mark.parametrize("case", list(GET_CASES))
def test_getscu_with_each_preference_gets_every_instance_decodable(env, tmp_path, case):
    options, expected = GET_CASES[case]
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu", "-d", *options, "-aet", "ME", "-aec", NODE_AE, "-k", "0008,0052=STUDY",
        "-k", f"StudyInstanceUID={STUDY}", "-od", str(out), "127.0.0.1", str(env["node"].dicom_port),
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert "Release Failed" not in text and "DUL P-Data PDU arrived" not in text, text[-2000:]
    final = text[text.rindex("Message Type                  : C-GET RSP") :]
    assert re.search(r"Completed Suboperations\s*: 4", final) and re.search(
        r"Failed Suboperations\s*: 0", final
    )
    # The final response announces no data set, so getscu reads it whole.
    assert re.search(r"Data Set\s*: none", final)
    assert "0x0000: Success" in final
    files = sorted(out.iterdir())
    assert _check_pixels(files, env) == expected
    # What the peer takes in the stored syntax goes out as the stored bytes, untouched
    # (+B: getscu writes what it received as it came).
    for path in files if "+B" in options else ():
        ds = dcmread(path, stop_before_pixels=True)
        original = env["originals"][ds.SOPInstanceUID]
        if expected[env["names"][ds.SOPInstanceUID]] == CORPUS[env["names"][ds.SOPInstanceUID]][0]:
            assert dataset_bytes(path) == dataset_bytes(original)
    converted = sum(1 for name, syntax in expected.items() if syntax != CORPUS[name][0])
    line = "C-GET from ME: 0x0000: 4 completed, 0 failed, 0 warning" + (
        f", {converted} transcoded" if converted else ""
    )
    wait_until("the C-GET logged", lambda: line in env["node"].log())


def test_move_to_an_implicit_only_destination_transcodes_every_instance(env):
    mover = env["mover"]
    dcmtk(
        "movescu", "-S", "-aet", "ME", "-aec", NODE_AE, "-aem", mover.ae_title, "-k", "0008,0052=STUDY",
        "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1", str(env["node"].dicom_port),
    )  # fmt: skip
    assert _check_pixels(mover.files(), env) == dict.fromkeys(CORPUS, IMPLICIT)
    log = env["node"].log()
    assert "C-MOVE from ME to IMPLICIT: 0x0000: 4 completed, 0 failed, 0 warning, 4 transcoded" in log


def test_forwarding_to_an_implicit_only_remote_transcodes_every_instance(env):
    forward = env["forward"]
    wait_until("4 instances forwarded", lambda: len(forward.files()) == 4)
    assert _check_pixels(forward.files(), env) == dict.fromkeys(CORPUS, IMPLICIT)
    wait_until("the association logged", lambda: "4 transcoded (4 to 1.2.840.10008.1.2)" in env["node"].log())
    assert re.search(
        r"association DICOM_NODE to FWDIMPL@127\.0\.0\.1:\d+: 4 forwarded(, 1 refused)?, 4 transcoded",
        env["node"].log(),
    )


def test_an_instance_that_cannot_be_converted_fails_alone(env, tmp_path):
    """A damaged codestream: its sub-operation fails naming it, forwarding gives it up, the node serves on."""
    node = env["node"]
    result = dcmtk(
        "getscu", "-d", "-aet", "ME", "-aec", NODE_AE, "-k", "0008,0052=STUDY",
        "-k", f"StudyInstanceUID={BAD_STUDY}", "-od", str(tmp_path), "127.0.0.1", str(node.dicom_port),
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert "Release Failed" not in text, text[-2000:]
    final = text[text.rindex("Message Type                  : C-GET RSP") :]
    assert re.search(r"Failed Suboperations\s*: 1", final) and re.search(r"Data Set\s*: none", final)
    assert "0xa702" in final.lower()
    assert not list(tmp_path.iterdir())
    wait_until(
        "the failure logged", lambda: f"C-GET of {env['bad']} failed: cannot be converted" in node.log()
    )
    # Forwarding does not take it for an outage of the remote: refused for good, the rest delivered.
    wait_until("refused for good", lambda: "1 failed" in node.cli("forward").stdout)
    assert len(env["forward"].files()) == 4
    assert node.health()["status"] == "ok"


def test_a_class_first_stored_while_running_goes_out_as_stored(env, tmp_path):
    """The C-GET negotiation learns from the ingest path: an MR instance C-STOREd as Explicit VR LE
    is then fetched by a requester preferring Implicit VR LE ([implicit, explicit, ...], pynetdicom's
    default) in Explicit VR LE, as the stored bytes.  (Last: the forward remote gets it too.)"""
    node = env["node"]
    study = generate_uid()
    ds = make_dataset(study_uid=study, series_uid=generate_uid(), sop_class_uid=MRImageStorage, modality="MR")
    path = write(ds, tmp_path / "mr.dcm")
    assert c_store(NODE_AE, node.dicom_port, dcmread(path)).Status == 0x0000
    received: dict[str, tuple[str, bytes]] = {}

    def on_store(event) -> int:
        received[event.request.AffectedSOPInstanceUID] = (
            str(event.context.transfer_syntax),
            event.request.DataSet.getvalue(),
        )
        return 0x0000

    ae = AE(ae_title="PYGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage)  # [implicit, explicit, deflated, big endian]
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        ae_title=NODE_AE,
        ext_neg=[build_role(MRImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study
        statuses = [
            s.Status for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000
    assert received == {ds.SOPInstanceUID: (EXPLICIT, dataset_bytes(path))}
