"""C-MOVE and C-GET against a running node: DCMTK movescu/getscu/storescp and pynetdicom peers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from bench.corpus import make_dataset, write
from tests.harness import NODE_AE, RunningNode, StoreSCP, dataset_bytes, dcmtk, free_port, node_config

U = {k: generate_uid() for k in ("A", "B", "C", "A_CT", "A_MR", "B_CT", "C_CT")}
MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet


class Picky:
    """A pynetdicom storage SCP that refuses MR instances (status 0xA700) and keeps the rest."""

    ae_title = "PICKY"

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(CTImageStorage)
        ae.add_supported_context(MRImageStorage)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event) -> int:
        if event.request.AffectedSOPClassUID == MRImageStorage:
            return 0xA700
        self.received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("retrieve")
    originals: dict[str, Path] = {}
    for study, series, acc, sop_class, count in (
        ("A", "A_CT", "ACC1", CTImageStorage, 3),
        ("A", "A_MR", "ACC1", MRImageStorage, 2),
        ("B", "B_CT", "ACC2", CTImageStorage, 1),
        ("C", "C_CT", "ACC3", CTImageStorage, 3),
    ):
        for i in range(count):
            ds = make_dataset(
                study_uid=U[study],
                series_uid=U[series],
                accession=acc,
                sop_class_uid=sop_class,
                modality="MR" if sop_class == MRImageStorage else "CT",
                instance_number=i + 1,
            )
            originals[ds.SOPInstanceUID] = write(ds, root / "corpus" / series / f"{i}.dcm")
    storescp = StoreSCP(root / "storescp").start()
    picky = Picky()
    movescu_port = free_port()
    remotes = [
        storescp.remote(),
        {"name": "self", "ae_title": "MOVESCU", "host": "127.0.0.1", "port": movescu_port},
        {"name": "down", "ae_title": "DOWNPACS", "host": "127.0.0.1", "port": free_port()},
        {"name": "picky", "ae_title": picky.ae_title, "host": "127.0.0.1", "port": picky.port},
    ]
    node = RunningNode(root / "node", node_config(root / "node", storage={"fsync": False}, remotes=remotes))
    result = node.cli("import", "-q", str(root / "corpus"))
    assert result.returncode == 0, result.stderr
    node.start()
    # One instance of study C has lost its file: retrieving C partly fails.
    lost = next(uid for uid, path in originals.items() if dcmread(path).SeriesInstanceUID == U["C_CT"])
    for stored in node.storage.rglob("*.dcm"):
        if dcmread(stored, stop_before_pixels=True).SOPInstanceUID == lost:
            stored.unlink()
    yield {
        "node": node,
        "storescp": storescp,
        "picky": picky,
        "movescu_port": movescu_port,
        "originals": originals,
        "lost": lost,
    }
    node.stop()
    storescp.stop()
    picky.server.shutdown()


def assert_identical(files: list[Path], originals: dict[str, Path]) -> set[str]:
    """Every received file's data set is byte-identical to the one stored; returns their SOP UIDs."""
    got = set()
    for path in files:
        uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(path) == dataset_bytes(originals[uid]), f"{uid} differs"
        got.add(uid)
    return got


def of_series(originals: dict[str, Path], *series: str) -> set[str]:
    return {
        uid
        for uid, path in originals.items()
        if dcmread(path, stop_before_pixels=True).SeriesInstanceUID in {U[s] for s in series}
    }


def test_movescu_own_destination_by_accession_as_in_background(env, tmp_path):
    node = env["node"]
    out = tmp_path / "CN1234"
    out.mkdir()
    dcmtk(
        "movescu", "-q", "-S", "-k", "0008,0050=ACC1", "+xa", "-od", str(out), "-aet", "MOVESCU",
        "+P", str(env["movescu_port"]), "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port),
    )  # fmt: skip
    got = assert_identical(sorted(out.iterdir()), env["originals"])
    assert got == of_series(env["originals"], "A_CT", "A_MR")
    assert "1 move" in node.log()


def test_movescu_to_storescp(env):
    node, storescp = env["node"], env["storescp"]
    dcmtk(
        "movescu", "-S", "-aet", "ME", "-aec", NODE_AE, "-aem", storescp.ae_title,
        "-k", "0008,0052=SERIES", "-k", f"StudyInstanceUID={U['A']}", "-k", f"SeriesInstanceUID={U['A_CT']}",
        "127.0.0.1", str(node.dicom_port),
    )  # fmt: skip
    got = assert_identical(storescp.files(), env["originals"])
    assert of_series(env["originals"], "A_CT") <= got


def test_getscu(env, tmp_path):
    node = env["node"]
    dcmtk(
        "getscu", "-aet", "ME", "-aec", NODE_AE, "-k", "0008,0052=STUDY", "-k", f"StudyInstanceUID={U['A']}",
        "-od", str(tmp_path), "127.0.0.1", str(node.dicom_port),
    )  # fmt: skip
    got = assert_identical(sorted(tmp_path.iterdir()), env["originals"])
    assert got == of_series(env["originals"], "A_CT", "A_MR")
    assert "1 get" in node.log()


def test_getscu_with_failed_suboperations_ends_cleanly(env, tmp_path):
    """The final C-GET-RSP (Warning, 1 of 3 failed) is one getscu reads whole: it releases normally.

    DCMTK's getscu never reads a data set announced by a C-GET-RSP; the node
    leaves the Failed SOP Instance UID List out for DCMTK requesters (the
    counts and the ErrorComment still say what failed).
    """
    node = env["node"]
    result = dcmtk(
        "getscu", "-v", "-aet", "ME", "-aec", NODE_AE, "-k", "0008,0052=STUDY",
        "-k", f"StudyInstanceUID={U['C']}", "-od", str(tmp_path),
        "127.0.0.1", str(node.dicom_port), check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Release Failed" not in output and "P-Data PDU arrived" not in output, output
    assert "Received C-GET Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in output, output
    got = assert_identical(sorted(tmp_path.iterdir()), env["originals"])
    assert got == of_series(env["originals"], "C_CT") - {env["lost"]}
    assert "C-GET from ME: 0xB000: 2 completed, 1 failed" in node.log()


def test_movescu_with_failed_suboperations_reads_the_failed_uid_list(env, tmp_path):
    """DCMTK's C-MOVE SCU does read the final response's identifier: it gets the list, and releases."""
    node = env["node"]
    out = tmp_path / "moved"
    out.mkdir()
    result = dcmtk(
        "movescu", "-d", "-S", "-aet", "MOVESCU", "+P", str(env["movescu_port"]), "-od", str(out),
        "-aec", NODE_AE, "-k", "0008,0052=STUDY", "-k", f"StudyInstanceUID={U['C']}",
        "127.0.0.1", str(node.dicom_port), check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "Release Failed" not in output, output
    assert env["lost"] in output, output  # movescu prints the Failed SOP Instance UID List
    got = assert_identical(sorted(out.iterdir()), env["originals"])
    assert got == of_series(env["originals"], "C_CT") - {env["lost"]}


def test_pynetdicom_get_with_failed_suboperations_gets_the_failed_uid_list(env):
    received, final = get(env["node"], study(U["C"]), [CTImageStorage])
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert final.identifier.FailedSOPInstanceUIDList == env["lost"]


def study(uid: str, level: str = "STUDY", **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = uid
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def move(node, destination: str, identifier: Dataset) -> tuple[list[Dataset], Dataset]:
    """(pending statuses, final status [and identifier]) of one C-MOVE from pynetdicom."""
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(MOVE)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        pending, final = [], None
        for status, ds in assoc.send_c_move(identifier, destination, MOVE):
            assert status is not None, "no response"
            if status.Status == 0xFF00:
                pending.append(status)
            else:
                final = status
                final.identifier = ds
        return pending, final
    finally:
        assoc.release()


def test_move_to_unknown_destination_is_a801(env):
    pending, final = move(env["node"], "NOBODY", study(U["B"]))
    assert pending == []
    assert final.Status == 0xA801
    assert "NOBODY" in final.ErrorComment


def test_move_to_destination_that_is_down_fails_naming_it(env):
    pending, final = move(env["node"], "DOWNPACS", study(U["A"]))
    assert pending == []
    assert final.Status == 0xC000
    assert "DOWNPACS" in final.ErrorComment
    assert final.NumberOfFailedSuboperations == 5
    # The node keeps serving.
    _, ok = move(env["node"], "PICKY", study(U["B"]))
    assert ok.Status == 0x0000


def test_move_with_some_failures_reports_them(env):
    picky = env["picky"]
    pending, final = move(env["node"], "PICKY", study(U["A"]))
    remaining = [p.NumberOfRemainingSuboperations for p in pending]
    assert remaining[0] == 4 and remaining == sorted(remaining, reverse=True)
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (3, 2)
    mr = of_series(env["originals"], "A_MR")
    assert set(final.identifier.FailedSOPInstanceUIDList) == mr
    assert of_series(env["originals"], "A_CT") <= set(picky.received)

    _, final = move(env["node"], "PICKY", study(U["A"], "SERIES", SeriesInstanceUID=U["A_MR"]))
    assert final.Status == 0xA702  # every sub-operation failed
    assert final.NumberOfFailedSuboperations == 2


def test_move_with_bad_identifier_fails_naming_it(env):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    _, final = move(env["node"], "PICKY", ds)
    assert final.Status == 0xA900
    assert "no key with a value" in final.ErrorComment
    _, final = move(env["node"], "PICKY", study(U["A"], "SERIES", SOPInstanceUID="1.2.3"))
    assert final.Status == 0xA900
    assert "SOPInstanceUID" in final.ErrorComment


def get(node, identifier: Dataset, sop_classes, model=GET) -> tuple[dict[str, bytes], Dataset]:
    """C-GET from pynetdicom taking the SCP role for *sop_classes*; returns (received, final)."""
    received: dict[str, bytes] = {}

    def on_store(event) -> int:
        received[event.request.AffectedSOPInstanceUID] = event.request.DataSet.getvalue()
        return 0x0000

    ae = AE(ae_title="PYGET")
    ae.add_requested_context(model)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class)
    roles = [build_role(sop_class, scp_role=True) for sop_class in sop_classes]
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        ae_title=NODE_AE,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        final = None
        for status, ds in assoc.send_c_get(identifier, model):
            assert status is not None, "no response"
            if status.Status != 0xFF00:
                final = status
                final.identifier = ds
        return received, final
    finally:
        assoc.release()


def test_get_sends_stored_bytes_on_the_same_association(env):
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.PatientID = "PAT001"
    ds.StudyInstanceUID = U["A"]
    ds.SeriesInstanceUID = U["A_MR"]
    received, final = get(env["node"], ds, [MRImageStorage], PatientRootQueryRetrieveInformationModelGet)
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == 2
    assert set(received) == of_series(env["originals"], "A_MR")
    for uid, data in received.items():
        assert data == dataset_bytes(env["originals"][uid])


def test_get_without_a_context_for_some_classes_reports_them(env):
    received, final = get(env["node"], study(U["A"]), [CTImageStorage])
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (3, 2)
    assert set(final.identifier.FailedSOPInstanceUIDList) == of_series(env["originals"], "A_MR")
    assert set(received) == of_series(env["originals"], "A_CT")


def test_get_cancelled_after_the_first_instance(env):
    """The requester sends C-CANCEL before answering the first C-STORE: the node stops there."""
    received: list[str] = []
    holder: dict = {}

    def on_store(event) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        if len(received) == 1:
            holder["assoc"].send_c_cancel(9, query_model=GET)
        return 0x0000

    ae = AE(ae_title="PYGET")
    ae.add_requested_context(GET)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    roles = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    assoc = ae.associate(
        "127.0.0.1",
        env["node"].dicom_port,
        ae_title=NODE_AE,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    holder["assoc"] = assoc
    assert assoc.is_established
    try:
        statuses = [status for status, _ in assoc.send_c_get(study(U["A"]), GET, msg_id=9)]
    finally:
        assoc.release()
    final = statuses[-1]
    assert final.Status == 0xFE00
    assert len(received) == 1
    assert (final.NumberOfCompletedSuboperations, final.NumberOfRemainingSuboperations) == (1, 4)
