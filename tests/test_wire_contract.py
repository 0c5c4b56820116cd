"""The wire layer against the pynetdicom it was written for.

- Every message :mod:`node.dimse.wire.codec` encodes by hand is byte for
  byte what pynetdicom's own encoder produces for it.
- pynetdicom still calls each internal the layer hooks, where it hooks it.
- Each hook is in place and has its effect after ``install``, and the
  fast-path hooks are absent with ``fast_path = false`` (checked in a fresh
  interpreter per mode, talking to a real pynetdicom peer).
- The installed pynetdicom and pydicom are the versions pyproject.toml pins.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage

from node.dimse.wire import codec, reference
from tests.harness import REPO

SOP_INSTANCE = "1.2.826.0.1.3680043.9.7433.1.42"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
MAX_PDUS = [0, 4096, 16384, 16390, 65536, 1_048_576]


def _dataset(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


@pytest.mark.parametrize("max_pdu", MAX_PDUS)
@pytest.mark.parametrize(
    "originator", [("", None), ("MOVESCU", 7), ("ODD", 65535)], ids=["plain", "move", "odd-length-ae"]
)
def test_c_store_rq(max_pdu, originator):
    ae, msg_id = originator
    data = _dataset(50_001)
    command = codec.c_store_rq(CTImageStorage, SOP_INSTANCE, 12, originator_ae=ae, originator_id=msg_id)
    ours = codec.message(3, command, data, max_pdu)
    theirs = reference.c_store_rq(
        3, CTImageStorage, SOP_INSTANCE, 12, data, max_pdu, originator_ae=ae, originator_id=msg_id
    )
    assert ours == theirs


@pytest.mark.parametrize("max_pdu", [4096, 16384, 16390, 65536, 1_048_576])
def test_c_store_rq_streamed_from_a_file(max_pdu):
    """The data set read in blocks (direct send of a stored file) is framed as pynetdicom frames it."""
    data = _dataset(700_001)  # more than one read block
    command = codec.c_store_rq(CTImageStorage, SOP_INSTANCE, 1)
    ours = codec.fragments(1, command, max_pdu, command=True) + b"".join(
        codec.dataset_stream(1, BytesIO(data), max_pdu)
    )
    assert ours == reference.c_store_rq(1, CTImageStorage, SOP_INSTANCE, 1, data, max_pdu)


@pytest.mark.parametrize("comment", ["", "could not write the data set: No space left on device", "odd"])
@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xB000, 0xC000])
def test_c_store_rsp(status, comment):
    ours = codec.message(5, codec.c_store_rsp(CTImageStorage, SOP_INSTANCE, 3, status, comment), None, 16384)
    theirs = reference.c_store_rsp(5, CTImageStorage, SOP_INSTANCE, 3, status, comment, 16384)
    assert ours == theirs


def test_c_echo_rsp():
    ours = codec.message(1, codec.c_echo_rsp("1.2.840.10008.1.1", 9, 0x0000), None, 16384)
    assert ours == reference.c_echo_rsp(1, "1.2.840.10008.1.1", 9, 0x0000, 16384)


@pytest.mark.parametrize("max_pdu", MAX_PDUS)
def test_pending_c_find_rsp(max_pdu):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Doe^Jane"
    ds.StudyInstanceUID = SOP_INSTANCE
    ds.PatientComments = "x" * 9000  # LT: spans several PDUs at the small sizes
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    identifier = fp.getvalue()
    ours = codec.message(7, codec.c_find_rsp_pending(FIND, 2), identifier, max_pdu)
    assert ours == reference.c_find_rsp_pending(7, FIND, 2, identifier, max_pdu)


@pytest.mark.parametrize("counts", [(4, 1, 0, 0), (0, 65535, 2, 1)])
def test_pending_c_get_rsp(counts):
    ours = codec.message(9, codec.c_get_rsp_pending(GET, 4, counts), None, 16384)
    assert ours == reference.c_get_rsp_pending(9, GET, 4, counts, 16384)


@pytest.mark.parametrize(("source", "reason"), [(0x02, 0x00), (0x02, 0x01), (0x02, 0x06), (0x00, 0x00)])
def test_a_abort(source, reason):
    assert codec.a_abort(source, reason) == reference.a_abort(source, reason)


def test_pynetdicom_still_calls_what_the_layer_hooks():
    missing = [site for site, found in reference.call_sites().items() if not found]
    assert not missing, f"pynetdicom moved these internals: {missing}"


_PROBE = r"""
import json, socket, struct, sys, tempfile, uuid
from pathlib import Path
from node.dimse import wire
fast = sys.argv[1] == "1"
wire.install(fast_path=fast)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
import pynetdicom.association
from pynetdicom.sop_class import Verification, StudyRootQueryRetrieveInformationModelGet as GET

calls = {"handler_echo": 0, "handler_store": 0, "fast_echo": 0, "fast_store": 0}
tmp = Path(tempfile.mkdtemp())

class Receiver:
    def stored(self, assoc, path):
        calls["fast_store"] += 1
        path.unlink()
        return 0, ""
    def failed(self, assoc, uid, error):
        return 0xA700, error
    def echo(self, assoc):
        calls["fast_echo"] += 1
        return 0

def on_echo(event):
    calls["handler_echo"] += 1
    return 0

def on_store(event):
    calls["handler_store"] += 1
    return 0

scp = AE("PROBESCP")
scp.add_supported_context(Verification)
scp.add_supported_context(CTImageStorage)
server = wire.serve(
    scp, ("127.0.0.1", 0), [(evt.EVT_C_ECHO, on_echo), (evt.EVT_C_STORE, on_store)],
    receiver=Receiver(), temp_path=lambda: tmp / uuid.uuid4().hex, retrieve_uids=[GET],
)
port = server.server_address[1]
scu = AE("PROBESCU")
scu.add_requested_context(Verification)
scu.add_requested_context(CTImageStorage)
assoc = scu.associate("127.0.0.1", port, ae_title="PROBESCP")
ds = Dataset()
ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientName = CTImageStorage, generate_uid(), "Probe"
ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
echo_status = assoc.send_c_echo().Status
store_status = assoc.send_c_store(ds).Status
assoc.release()

with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
    raw.sendall(bytes.fromhex("0100FFFFFFFF"))
    reply = raw.recv(10)

server_contexts = server.contexts
ts_ids = {id(ts) for cx in server_contexts for ts in cx.transfer_syntax}
ts_names = {str(ts) for cx in server_contexts for ts in cx.transfer_syntax}
routed = pynetdicom.association.uid_to_service_class(GET).__name__
server.shutdown()
print(json.dumps({
    "installed": wire.installed(),
    "calls": calls,
    "statuses": [echo_status, store_status],
    "abort_reply": reply.hex(),
    "shared_ts": len(ts_ids) == len(ts_names),
    "routed": routed,
}))
"""


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pynetdicom-paths"])
def test_hooks_installed_and_effective(fast):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "1" if fast else "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    installed = got["installed"]
    # Safety and function hooks: both modes.
    assert installed["reader"] and installed["inbound"] and installed["settings"] and installed["retrieve"]
    assert installed["negotiation"]
    # Fast-path hooks: only with the fast path.
    for hook in ("fast_read", "fast_store", "direct", "reactor", "validation"):
        assert installed[hook] is fast, (hook, installed)
    assert got["statuses"] == [0, 0]
    if fast:
        assert got["calls"] == {"handler_echo": 0, "handler_store": 0, "fast_echo": 1, "fast_store": 1}
    else:
        assert got["calls"] == {"handler_echo": 1, "handler_store": 1, "fast_echo": 0, "fast_store": 0}
    # The bounded reader answered the 4 GiB announcement with an A-ABORT (not a read of 4 GiB).
    assert got["abort_reply"].startswith("07")
    # pynetdicom's per-connection copy shares one object per transfer syntax.
    assert got["shared_ts"]
    assert got["routed"] == "RetrieveService"


def _pinned(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement).groups()
    return name.lower(), spec.strip()


@pytest.mark.parametrize("package", ["pynetdicom", "pydicom"])
def test_pinned_to_the_installed_version(package):
    project = tomllib.loads((Path(REPO) / "pyproject.toml").read_text())["project"]
    pins = dict(_pinned(r) for r in project["dependencies"])
    spec = pins[package]
    match = re.fullmatch(r"~=(\d+)\.(\d+)\.(\d+)", spec)
    assert match, f"{package} should be pinned ~=X.Y.Z (compatible release), not {spec!r}"
    major, minor, patch = map(int, match.groups())
    installed = tuple(int(p) for p in version(package).split(".")[:3])
    assert installed[:2] == (major, minor) and installed[2] >= patch, (package, installed, spec)
